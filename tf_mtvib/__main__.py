from tf_mtvib.cli import main

raise SystemExit(main())
