"""`backpack COMMAND` (also `python -m backpack COMMAND`): training (backpack.runs,
chapter 7b), evaluation, the demo (backpack.demo, chapter 9b), tokenizers of your own
text and the book's data folder (backpack.data, chapter 1), the speed benchmark
(chapter 10) and the page that runs a Backpack in the browser (backpack.browser).
Hand-written.

Each command imports its module only when it runs, so `backpack demo` never imports
the trainer and `backpack --help` imports nothing heavy."""
import argparse
import re
import sys
import textwrap
from pathlib import Path

COMMANDS = {  # name -> what it does (the first line of `backpack --help`)
    "train": "train a Backpack or a Transformer into an out-dir (chapter 7; "
             "checkpoints, exact resume and results: chapter 7b)",
    "eval": "the perplexity of a saved model on a text or token file",
    "demo": "talk to the Backpack trained in the book, or another (chapter 9b)",
    "tokenizer": "train a tokenizer on your own text files, or encode one into a "
                 "token file (chapter 1)",
    "data": "the book's data folder: `data install` copies it for a pip install, "
            "`data where` prints the folders in use",
    "bench": "chapter 10's benchmark: training step, memory and generation, side by "
             "side",
    "web": "write a web page that runs a Backpack in the browser, offline (chapter "
           "9's last section)",
}


WIDTH = 88  # the help's lines wrap here, a usual terminal's width


def usage(prog: str) -> str:
    """`backpack --help`: every command, each wrapped at WIDTH columns."""
    width, indent = max(map(len, COMMANDS)), " " * len("usage: ")
    synopses = (
        "train [--preset NAME] [--train-text FILE --val-text FILE] [--tokenizer PATH] "
        "[--out-dir DIR] [--resume] ...",
        "eval --model FOLDER (--text FILE | --tokens FILE) [--tokenizer PATH] ...",
        "demo [--model FOLDER] [--prompt TEXT] [--max-new-tokens N] [--seed S] ...",
        "tokenizer train FILE... --out PATH [--vocab-size N] | tokenizer encode FILE "
        "[--tokenizer PATH]",
        "data install [--from PATH] [--overwrite] | data where",
        "bench [OPTIONS]",
        "web --model FOLDER --out FOLDER [--tokenizer PATH] [--title TEXT]")
    lines = [f"usage: {prog} COMMAND [OPTIONS]"]
    for synopsis in synopses:  # an option in brackets is never cut in two
        glued = re.sub(r"\[[^]]*\]", lambda m: m[0].replace(" ", "\0"), synopsis)
        wrapped = textwrap.wrap(f"{prog} {glued}", WIDTH, initial_indent=indent,
                                subsequent_indent=indent + "    ",
                                break_on_hyphens=False)
        lines += [line.replace("\0", " ") for line in wrapped]
    lines += ["", "Backpack Language Models, built step by step (backpack-book).", "",
              "commands:"]
    for name, what in COMMANDS.items():
        lines += textwrap.wrap(what, WIDTH, initial_indent=f"  {name:{width}s}  ",
                               subsequent_indent=" " * (width + 4))
    lines += ["", f"`{prog} COMMAND --help` lists a command's options with their "
                  f"defaults."]
    return "\n".join(lines)


def data_parser(prog: str = "backpack data") -> argparse.ArgumentParser:
    """The arguments of `backpack data`."""
    parser = argparse.ArgumentParser(prog=prog, description="The book's data folder.")
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
             "unless the new copy holds them all) (default: off)",
    )
    commands.add_parser("where", help="print the data and cache folders in use")
    return parser


def data_main(argv: list[str], prog: str = "python -m backpack data") -> int:
    """`backpack data ...`: 0 done, 1 refused (an install exists, a full disk), 2 bad
    input."""
    try:
        args = data_parser(prog).parse_args(argv)
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
    error = f"{prog} install: error:"
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


def demo_main(argv: list[str], prog: str = "python -m backpack demo") -> int:
    """`backpack demo ...`; missing data is one line of error, not a traceback
    (exit 1); a bad flag is one line of error from demo.main (exit 2)."""
    from backpack.data import DataError
    from backpack.demo import main

    try:
        return main(argv, prog=prog)
    except (DataError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1


def train_main(argv: list[str], prog: str) -> int:
    """`backpack train ...`: backpack.runs.cli, which exits 2 on a bad flag, 3 on a
    run that failed to learn, 1 on another error."""
    from backpack.runs import cli

    cli(argv, prog=prog)
    return 0


def eval_main(argv: list[str], prog: str) -> int:
    """`backpack eval ...`: a saved model's perplexity (backpack.runs.eval_main)."""
    from backpack.runs import eval_main as evaluate

    return evaluate(argv, prog=prog)


def tokenizer_main(argv: list[str], prog: str) -> int:
    """`backpack tokenizer train|encode ...`: backpack.data.tokenizer_main; 0 done, 1
    refused (an existing --out, a full disk), 2 bad input."""
    from backpack.data import tokenizer_main as tokenizer

    return tokenizer(argv, prog=prog)


def bench_main(argv: list[str], prog: str) -> int:
    """`backpack bench ...`: chapter 10's benchmark (backpack.bench)."""
    try:
        from backpack.bench import bench_main as bench
    except ImportError:  # before chapter 10 was split, the benchmark was backpack.fast
        from backpack.fast import bench_main as bench
    bench(argv)
    return 0


def web_main(argv: list[str], prog: str) -> int:
    """`backpack web ...`: a page that runs a Backpack in the browser
    (backpack.browser); 0 written, 1 refused (a non-empty --out), 2 bad input."""
    from backpack.browser import web_main as web

    return web(argv, prog=prog)


RUNNERS = {"train": train_main, "eval": eval_main, "demo": demo_main,
           "tokenizer": tokenizer_main, "data": data_main, "bench": bench_main,
           "web": web_main}


def main(argv: list[str] | None = None) -> int:
    """`backpack COMMAND ...`: the command's exit status; 2 for an unknown command."""
    console = Path(sys.argv[0]).name == "backpack"  # the console script, not -m
    prog = "backpack" if console else "python -m backpack"
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(usage(prog))
        return 0
    if argv and argv[0] in RUNNERS:
        return RUNNERS[argv[0]](argv[1:], prog=f"{prog} {argv[0]}")
    unknown = (f"{prog}: error: unknown command {argv[0]!r}: choose one of "
               f"{', '.join(COMMANDS)}" if argv else f"{prog}: error: no command given")
    print(f"{usage(prog)}\n{unknown}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
