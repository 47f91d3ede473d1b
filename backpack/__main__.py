"""`python -m backpack COMMAND`: the demo (backpack.demo, chapter 9b) and the book's
data folder (backpack.data, chapter 1). Hand-written."""
import argparse
import sys

USAGE = """usage: python -m backpack demo [--prompt TEXT] [--max-new-tokens N]
                               [--seed S] [--debias] [--topic NAME STRENGTH]
                               [--edit WORD OLD NEW] [--model FOLDER]
                               [--tokenizer PATH]
       python -m backpack data install [--from PATH] [--overwrite]
       python -m backpack data where

  demo          talk to the Backpack trained in the book, or another (demo --help:
                the options and their defaults)
  data install  copy the book's data folder (tokenizer, models, corpus...) into this
                user's data folder, where a package installed with pip finds it
  data where    print the data folder and the cache folder the package uses"""


def data_parser() -> argparse.ArgumentParser:
    """The arguments of `python -m backpack data`."""
    parser = argparse.ArgumentParser(
        prog="python -m backpack data", description="The book's data folder."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    install = commands.add_parser(
        "install", help="copy the book's data folder into this user's data folder"
    )
    install.add_argument(
        "--from", dest="source", metavar="PATH",
        help="the data/ folder of a clone of backpack-book (default: the clone this "
             "package runs from)",
    )
    install.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing install (its files are kept beside the new one "
             "unless the new copy holds them all)",
    )
    commands.add_parser("where", help="print the data and cache folders in use")
    return parser


def data_main(argv: list[str]) -> int:
    """`python -m backpack data ...`: 0 done, 1 refused (an install exists, a full
    disk), 2 bad input."""
    try:
        args = data_parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage or the error
        return int(stop.code or 0)
    from backpack import data

    if args.command == "where":
        found = data.DATA_DIR.is_dir()
        print(f"data:  {data.DATA_DIR}" + ("" if found else " (missing)"))
        print(f"cache: {data.CACHE_DIR}")
        print(f"order: $BACKPACK_DATA, {data.REPO_DIR / 'data'} (in a clone of the "
              f"book), {data.user_folder('data')}")
        if not found:
            print(data.data_not_found_message())
        return 0
    error = "python -m backpack data install: error:"
    try:
        report = data.install_data(args.source, overwrite=args.overwrite)
    except data.DataError as err:
        print(f"{error} {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an existing install (FileExistsError), a full disk...
        print(f"{error} {err}", file=sys.stderr)
        return 1
    print("\n".join(report))
    return 0


def demo_main(argv: list[str]) -> int:
    """`python -m backpack demo ...`; missing data is one line of error, not a
    traceback (exit 1); a bad flag is one line of error from demo.main (exit 2)."""
    from backpack.data import DataError
    from backpack.demo import main

    try:
        return main(argv)
    except (DataError, FileNotFoundError) as err:
        print(f"python -m backpack demo: error: {err}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        return 0
    if argv[:1] == ["demo"]:
        return demo_main(argv[1:])
    if argv[:1] == ["data"]:
        return data_main(argv[1:])
    unknown = f"\nunknown command {argv[0]!r}" if argv else ""
    print(f"{USAGE}{unknown}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
