from kprobe.cli import main

raise SystemExit(main())
