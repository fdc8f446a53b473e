from minipacs.cli import main

raise SystemExit(main())
