"""Numbers reported by the MTVIB paper (journal version, Tables III-IV), in %.

Keyed by data set, then system, then task; each list runs over the FGSM
eta = 0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30. The MultiFashion STL task-1
entry at eta = 0.30 reads '449.%' in the extracted text; 44.9 is assumed.
"""

ETAS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30)

TABLES = {
    "multimnist": {
        "stl": {"top_left": [94.8, 86.1, 85.4, 84.0, 82.5, 80.2, 77.1], "bottom_right": [93.6, 81.9, 80.3, 79.0, 76.6, 73.7, 70.0]},
        "stvib": {"top_left": [94.9, 86.5, 85.2, 83.2, 81.1, 78.5, 75.5], "bottom_right": [93.7, 82.9, 81.5, 80.0, 78.0, 75.9, 73.0]},
        "gs": {"top_left": [94.7, 85.3, 84.7, 83.2, 81.4, 79.3, 76.4], "bottom_right": [93.7, 80.1, 79.3, 77.3, 75.1, 72.6, 69.0]},
        "uwl": {"top_left": [95.0, 85.6, 76.3, 66.9, 57.6, 48.2, 38.9], "bottom_right": [93.7, 81.1, 80.2, 78.8, 77.1, 74.2, 71.0]},
        "mtvib": {"top_left": [94.9, 86.0, 84.7, 83.4, 81.6, 79.1, 76.8], "bottom_right": [93.7, 81.5, 80.5, 79.0, 77.3, 74.7, 72.2]},
    },
    "multifashion": {
        "stl": {"top_left": [87.1, 59.1, 57.3, 54.9, 51.7, 48.4, 44.9], "bottom_right": [86.0, 60.8, 59.2, 56.5, 53.2, 50.3, 46.1]},
        "stvib": {"top_left": [86.7, 60.1, 57.7, 55.0, 52.4, 49.7, 46.7], "bottom_right": [85.3, 60.1, 57.6, 54.7, 51.9, 49.2, 46.4]},
        "gs": {"top_left": [86.8, 57.1, 54.8, 51.9, 48.6, 45.4, 41.9], "bottom_right": [85.6, 57.2, 55.9, 53.5, 50.6, 48.3, 45.8]},
        "uwl": {"top_left": [86.7, 57.5, 54.9, 51.6, 48.3, 44.7, 40.5], "bottom_right": [85.3, 56.3, 54.5, 52.5, 49.7, 46.0, 43.6]},
        "mtvib": {"top_left": [86.2, 58.2, 56.3, 53.7, 51.0, 48.4, 45.2], "bottom_right": [84.4, 56.4, 55.0, 52.8, 50.9, 49.0, 46.4]},
    },
}
