from conformance.bench.cli import main

raise SystemExit(main())
