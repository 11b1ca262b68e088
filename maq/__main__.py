import sys

try:
    from maq.cli import main
except KeyboardInterrupt:          # Ctrl-C while the CLI is still importing
    print("maq: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
