from edgeretina.cli import main

raise SystemExit(main())
