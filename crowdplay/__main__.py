from crowdplay.cli import main

raise SystemExit(main())
