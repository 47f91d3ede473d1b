"""`python -m backpack demo [...]`: dispatches to backpack.demo (chapter 9). Hand-written."""
import sys

USAGE = "usage: python -m backpack demo [--prompt TEXT] [--max-new-tokens N] [--seed S] " \
        "[--debias] [--topic NAME STRENGTH]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "demo":
        print(f"{USAGE}\nunknown command {argv[0]!r}" if argv else USAGE, file=sys.stderr)
        return 2
    from backpack.demo import main as demo_main
    return demo_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
