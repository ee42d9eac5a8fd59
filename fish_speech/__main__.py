from fish_speech.cli import main

raise SystemExit(main())
