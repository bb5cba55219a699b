"""`python -m gpunet ...` is the `gpunet` command."""

from gpunet.cli import main

raise SystemExit(main())
