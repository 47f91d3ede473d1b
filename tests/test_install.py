"""The package installed anywhere: where it finds the book's data and puts its cache,
`python -m backpack data install`, the declared dependencies, and (slow) a wheel built,
installed into a fresh venv and run from a folder outside the repository."""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
from pathlib import Path

import pytest

from backpack import data
from backpack import checkpoint
from backpack.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIX = "python -m backpack data install --from"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No BACKPACK_* or XDG_* settings, HOME in tmp_path, a Linux layout."""
    for name in ("BACKPACK_DATA", "BACKPACK_CACHE", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    return tmp_path / "home"


def fake_clone(root: Path, with_data: bool = True) -> Path:
    """A folder laid out like a clone of the book (pyproject.toml, book/, data/)."""
    (root / "book").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\n")
    if with_data:
        (root / "data").mkdir()
    return root


def small_book_data(folder: Path) -> Path:
    """A small data folder that passes for the book's: tokenizer, a model, results."""
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "gutenberg-16k.json").write_text('{"model": {}}\n')
    (folder / "models" / "tiny").mkdir(parents=True)
    (folder / "models" / "tiny" / "config.json").write_text("{}\n")
    (folder / "results").mkdir()
    (folder / "results" / "08_analysis.json").write_text('{"rho": 0.5}\n')
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder: relative path -> content."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- where the data and the cache are -------------------------------------------------

def test_user_folders_follow_each_system(clean_env, monkeypatch, tmp_path):
    home = clean_env
    assert data.user_folder("data") == home / ".local" / "share" / "backpack"
    assert data.user_folder("cache") == home / ".cache" / "backpack"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec ignores it
    assert data.user_folder("data") == tmp_path / "xdg-data" / "backpack"
    assert data.user_folder("cache") == home / ".cache" / "backpack"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert (
        data.user_folder("data")
        == home / "Library" / "Application Support" / "backpack"
    )
    assert data.user_folder("cache") == home / "Library" / "Caches" / "backpack"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert data.user_folder("data") == tmp_path / "Local" / "backpack"
    assert data.user_folder("cache") == tmp_path / "Local" / "backpack-cache"
    with pytest.raises(ValueError, match="'data' or 'cache'"):
        data.user_folder("config")


def test_data_folder_order(clean_env, monkeypatch, tmp_path):
    clone = fake_clone(tmp_path / "clone")
    user = clean_env / ".local" / "share" / "backpack"
    monkeypatch.setenv("BACKPACK_DATA", str(tmp_path / "mine"))  # 1. the setting
    assert data.find_data_dir(clone) == tmp_path / "mine"
    monkeypatch.delenv("BACKPACK_DATA")
    assert data.find_data_dir(clone) == clone / "data"  # 2. the clone's data/
    shutil.rmtree(clone / "data")
    assert data.find_data_dir(clone) == user  # 3. the user's folder
    # an installed package: no clone above it,
    site_packages = tmp_path / "site-packages"
    # whatever else installed a data/ there
    (site_packages / "data").mkdir(parents=True)
    assert data.find_data_dir(site_packages) == user


def test_cache_folder_order(clean_env, monkeypatch, tmp_path):
    clone = fake_clone(tmp_path / "clone")
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    assert data.find_cache_dir(clone) == clone / ".cache" / "backpack"
    assert data.find_cache_dir(site_packages) == clean_env / ".cache" / "backpack"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    assert data.find_cache_dir(site_packages) == tmp_path / "xdg-cache" / "backpack"
    monkeypatch.setenv("BACKPACK_CACHE", str(tmp_path / "fast-disk"))
    assert data.find_cache_dir(site_packages) == tmp_path / "fast-disk"
    assert data.find_cache_dir(clone) == tmp_path / "fast-disk"


def test_this_checkout_reads_its_own_data():
    assert data.DATA_DIR == ROOT / "data" or os.environ.get("BACKPACK_DATA")
    assert data.CACHE_DIR == ROOT / ".cache" / "backpack" or os.environ.get(
        "BACKPACK_CACHE"
    )


@pytest.mark.slow
def test_every_module_uses_the_data_folder_resolved_at_import(tmp_path):
    code = ("from backpack.data import DATA_DIR, TOKENIZER_PATH\n"
            "from backpack.analysis import WORDSIM_DIR\n"
            "from backpack.checkpoint import RESULTS_DIR\n"
            "print(DATA_DIR, TOKENIZER_PATH.parent.parent, WORDSIM_DIR.parent.parent, "
            "RESULTS_DIR.parent)")
    env = {**os.environ, "BACKPACK_DATA": str(tmp_path / "elsewhere")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "elsewhere")] * 4


# --- messages when the data is missing ------------------------------------------------

def test_missing_data_names_the_command_that_fixes_it(clean_env, monkeypatch, tmp_path):
    nowhere = tmp_path / "nowhere"
    monkeypatch.setattr(data, "DATA_DIR", nowhere)
    monkeypatch.setattr(checkpoint, "DATA_DIR", nowhere)
    monkeypatch.setattr(checkpoint, "RESULTS_DIR", nowhere / "results")
    with pytest.raises(data.DataError, match=r"no book data found \(looked in "
                       r"\$BACKPACK_DATA \(unset\), .*/data, .*\.local/share/backpack\)"
                       r": run `python -m backpack data install --from "):
        data.load_tokenizer(nowhere / "tokenizer" / "gutenberg-16k.json")
    with pytest.raises(FileNotFoundError, match=f"no trained model 'backpack-gutenberg'"
                       f": no book data found .*{FIX}"):
        checkpoint.load_trained("backpack-gutenberg")
    with pytest.raises(
        FileNotFoundError, match=f"08_analysis.json does not exist: .*{FIX}"
    ):
        checkpoint.chapter_results("08_analysis")
    monkeypatch.setenv("BACKPACK_DATA", str(nowhere))
    with pytest.raises(
        data.DataError,
        match=r"\$BACKPACK_DATA names .*nowhere, which is "
        "not a folder",
    ):
        data.corpus_path(nowhere / "corpus" / "gutenberg" / "gutenberg_train.txt.xz")


def test_missing_file_in_the_data_folder_and_elsewhere(tmp_path):
    with pytest.raises(data.DataError, match="not found in the book's data folder: "
                       "restore it with `git checkout -- data/tokenizer/gone.json`"):
        data.load_tokenizer(data.DATA_DIR / "tokenizer" / "gone.json")
    with pytest.raises(data.DataError, match=r"gone.json not found: pass a tokenizer "
                       r"saved with `Tokenizer.save`"):
        data.load_tokenizer(tmp_path / "gone.json")


def test_load_trained_lists_only_loadable_models():
    loadable = sorted(
        p.parent.name for p in (data.DATA_DIR / "models").glob("*/config.json")
    )
    assert "backpack-gutenberg" in loadable and "micro-comparison" not in loadable
    with pytest.raises(FileNotFoundError) as caught:
        checkpoint.load_trained("micro-comparison")  # results of runs, no weights
    message = str(caught.value)
    assert "'micro-comparison' is not a model that can be loaded" in message
    assert "backpack-results.json" in message and "but no config.json" in message
    assert message.endswith(f"loadable models: {loadable}")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"no trained model 'nope' in {data.DATA_DIR / 'models'}; "
            f"loadable models: {loadable}")):
        checkpoint.load_trained("nope")


# --- python -m backpack data install -------------------------------------------------


def test_data_install_copies_refuses_and_keeps_the_users_files(
    clean_env, tmp_path, capsys
):
    source = small_book_data(tmp_path / "clone" / "data")
    user = clean_env / ".local" / "share" / "backpack"
    assert main(["data", "install", "--from", str(source)]) == 0
    out = capsys.readouterr().out
    assert "copied 3 files" in out and str(source) in out and str(user) in out
    assert "models/" in out and "results/" in out
    assert tree(user) == tree(source)
    # no temporaries
    assert sorted(p.name for p in user.parent.iterdir()) == ["backpack"]

    (user / "models" / "mine").mkdir()  # a model of the user's
    (user / "models" / "mine" / "config.json").write_text('{"mine": 1}\n')
    before = tree(user)
    assert main(["data", "install", "--from", str(source)]) == 1  # refused
    err = capsys.readouterr().err
    assert "already exists: pass --overwrite" in err and str(user) in err
    assert tree(user) == before

    # --from the root of a clone: its data/; the user's model is kept aside, not lost
    assert main(["data", "install", "--from", str(source.parent), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert tree(user) == tree(source)
    kept = [p for p in user.parent.iterdir() if p != user]
    assert len(kept) == 1 and kept[0].name.startswith("backpack.previous-")
    assert tree(kept[0]) == before and str(kept[0]) in out

    assert main(["data", "install", "--from", str(source), "--overwrite"]) == 0
    assert len(list(user.parent.iterdir())) == 2  # the same files: nothing else kept
    assert tree(source) == tree(tmp_path / "clone" / "data")  # the source is untouched


@pytest.mark.parametrize("case", ["missing", "not book data", "into itself", "a file"])
def test_data_install_bad_input_exits_2(clean_env, tmp_path, capsys, case):
    user = clean_env / ".local" / "share" / "backpack"
    source = {
        "missing": tmp_path / "no-such-folder",
        "not book data": tmp_path / "notes",
        "into itself": user,
        "a file": tmp_path / "data",
    }[case]
    if case == "not book data":
        source.mkdir()
        (source / "todo.txt").write_text("a folder of something else")
    if case == "into itself":
        small_book_data(user)
    if case == "a file":
        small_book_data(source)
        user.parent.mkdir(parents=True)
        user.write_text("not a folder")
    expected = {
        "missing": "no-such-folder is not a folder: pass --from the data/ folder",
        "not book data": "is not the book's data folder (it has no "
                         "tokenizer/gutenberg-16k.json and models/)",
        "into itself": "the same folder, or one holds the other",
        "a file": "is a file, not a folder",
    }[case]
    before = tree(tmp_path)
    assert main(["data", "install", "--from", str(source)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("python -m backpack data install: error: ") and expected in err
    )
    assert tree(tmp_path) == before  # nothing written, nothing removed


def test_data_install_without_from_outside_a_clone_says_what_to_pass(
        clean_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(data, "REPO_DIR", tmp_path / "site-packages")
    assert main(["data", "install"]) == 2
    assert "pass --from /path/to/backpack-book/data" in capsys.readouterr().err


def test_help_and_data_where(capsys):
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "usage: python -m backpack" in usage
    assert "demo [--model FOLDER] [--prompt TEXT]" in usage
    assert "data install [--from PATH]" in usage
    assert (
        main(["nonsense"]) == 2
        and "unknown command 'nonsense'" in capsys.readouterr().err
    )
    assert main(["data", "where"]) == 0
    where = capsys.readouterr().out
    assert f"data:  {data.DATA_DIR}\n" in where and f"cache: {data.CACHE_DIR}" in where
    assert main(["data"]) == 2  # argparse: a command is required
    done = subprocess.run(
        [sys.executable, "-m", "backpack", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "data install" in done.stdout


def test_help_fits_a_terminal_and_names_the_console_command(capsys, monkeypatch):
    """`backpack --help` wraps at 88 columns; run as the console script `backpack`,
    the demo's errors name `backpack demo`, not `python -m backpack demo`."""
    from backpack.__main__ import WIDTH, usage

    assert all(len(line) <= WIDTH for line in usage("python -m backpack").splitlines())
    monkeypatch.setattr(sys, "argv", [str(Path(sys.executable).with_name("backpack"))])
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--max-new-tokens", "x"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("backpack demo: error:")


# --- declared dependencies -----------------------------------------------------------


def imports(tree_: ast.Module) -> tuple[set[str], set[str], set[str]]:
    """Top-level names of the absolute imports of a module: (at module level, at module
    level inside a try that catches ImportError, inside functions or classes)."""
    top, guarded, inner = set(), set(), set()

    def names(node) -> set[str]:
        if isinstance(node, ast.Import):
            return {alias.name.split(".")[0] for alias in node.names}
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            return {node.module.split(".")[0]}
        return set()

    def walk(body, bucket):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner.update(n for sub in ast.walk(node) for n in names(sub))
            elif isinstance(node, ast.Try):
                caught = {
                    n.id
                    for h in node.handlers
                    for n in ast.walk(h.type or ast.Name("Exception"))
                    if isinstance(n, ast.Name)
                }
                catches_import_error = bool(
                    caught
                    & {
                        "ImportError",
                        "ModuleNotFoundError",
                        "Exception",
                        "BaseException",
                    }
                )
                walk(node.body, guarded if catches_import_error else bucket)
                for part in (
                    node.orelse,
                    node.finalbody,
                    *[h.body for h in node.handlers],
                ):
                    walk(part, bucket)
            elif isinstance(node, (ast.If, ast.With, ast.For, ast.While)):
                walk(node.body + getattr(node, "orelse", []), bucket)
            else:
                bucket.update(names(node))

    walk(tree_.body, top)
    return top, guarded, inner


@functools.cache
def installed_modules() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution(module: str) -> str:
    """The normalised name of the distribution that provides an importable module."""
    dists = installed_modules().get(module, [module])
    return re.sub(r"[-_.]+", "-", dists[0]).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group()).lower()
            for r in requirements}


def test_every_third_party_import_is_declared():
    core = requirement_names(PYPROJECT["project"]["dependencies"])
    extras = {name: requirement_names(reqs)
              for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    optional = set().union(*extras.values())
    undeclared_core, undeclared = {}, {}
    for path in sorted((ROOT / "backpack").glob("*.py")):
        top, guarded, inner = imports(ast.parse(path.read_text(), str(path)))
        def third_party(names: set[str]) -> set[str]:
            return {n for n in names if n not in sys.stdlib_module_names | {"backpack"}}

        for module in third_party(top):
            if distribution(module) not in core:
                undeclared_core.setdefault(path.name, []).append(module)
        for module in third_party(guarded | inner):
            if distribution(module) not in core | optional:
                undeclared.setdefault(path.name, []).append(module)
    assert not undeclared_core, (
        f"imported at module level but not in [project] dependencies: {undeclared_core}"
    )
    assert not undeclared, (
        f"imported (lazily or guarded) but declared nowhere in pyproject: {undeclared}")
    # the modules known to be imported only lazily sit in extras, not in the core
    assert {"scipy", "ipywidgets", "datasets"} <= optional and not (
        {"scipy", "ipywidgets", "datasets"} & core)
    assert extras["all"] == {"backpack"}


def test_license_is_the_one_pyproject_promises():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert (
        text.startswith("MIT License")
        and "Copyright (c) 2026 the backpack-book authors" in text
    )


# --- end to end: a wheel in a fresh venv, run from elsewhere --------------------------


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=600, **kwargs)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_from_anywhere(tmp_path):
    # 1. sdist and wheel, built offline from a copy of what they hold (the repository
    #    stays clean: no build/ or egg-info written into it)
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "backpack", source / "backpack",
                    ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    if importlib.util.find_spec("build"):
        built = run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source]
        )
    else:
        built = run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "-w",
                dist,
                source,
            ]
        )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("backpack-*.whl")
    for sdist in dist.glob("backpack-*.tar.gz"):  # python -m build makes one too
        with tarfile.open(sdist) as archive:
            assert "backpack-0.1.0/LICENSE" in archive.getnames()
    listing = run([sys.executable, "-m", "zipfile", "-l", wheel]).stdout
    assert "backpack/__main__.py" in listing and "licenses/LICENSE" in listing
    assert "backpack/web/backpack.js" in listing  # the browser's model (backpack web)
    assert "data/" not in listing.replace("backpack/data.py", "")  # code only

    # 2. a fresh venv: only the wheel is installed into it (no index: nothing is
    #    downloaded); then a .pth reuses the dependencies installed here (torch...)
    venv = tmp_path / "fresh"
    made = run([sys.executable, "-m", "venv", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run([python, "-m", "pip", "install", "--no-deps", "--no-index",
                     "--disable-pip-version-check", wheel])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site_packages = Path(run([python, "-c", "import sysconfig; "
                              "print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site_packages / "reuse_dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    before = snapshot(site_packages)

    # 3. run from a folder outside the repository, as a new user: no settings, HOME in
    #    tmp
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}

    def backpack(*args) -> subprocess.CompletedProcess:
        return run([python, *args], cwd=elsewhere, env=env)

    user_data = home / ".local" / "share" / "backpack"
    user_cache = home / ".cache" / "backpack"
    probe = backpack("-c", (
        "import backpack, backpack.data as d\n"
        "from backpack.checkpoint import load_trained\n"
        "print(backpack.__file__); print(d.DATA_DIR); print(d.CACHE_DIR)\n"
        "for load in (d.load_tokenizer, lambda: load_trained('backpack-gutenberg')):\n"
        "    try:\n"
        "        load()\n"
        "    except (d.DataError, FileNotFoundError) as err:\n"
        "        print('error:', err)\n"))
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    # the wheel's package, not the repo's
    assert Path(lines[0]).is_relative_to(site_packages)
    assert lines[1:3] == [str(user_data), str(user_cache)]
    assert len(lines) == 5 and all(
        "no book data found" in line and FIX in line for line in lines[3:]), lines
    assert "or set BACKPACK_DATA" in lines[3]

    demo_args = ("-m", "backpack", "demo", "--prompt", "The captain said",
                 "--max-new-tokens", "5", "--seed", "1")
    no_data = backpack(*demo_args)
    assert no_data.returncode == 1 and "Traceback" not in no_data.stderr
    assert no_data.stderr.startswith("python -m backpack demo: error: ")
    assert "no book data found" in no_data.stderr and FIX in no_data.stderr

    # 4. install the data, then load the shipped Backpack and run the demo once
    install = backpack("-m", "backpack", "data", "install", "--from", ROOT / "data")
    assert install.returncode == 0, install.stderr
    assert f"to {user_data}:" in install.stdout and "models/" in install.stdout
    assert (user_data / "models" / "backpack-gutenberg" / "config.json").is_file()
    where = backpack("-m", "backpack", "data", "where")
    assert (
        where.returncode == 0
        and f"data:  {user_data}\ncache: {user_cache}\n" in where.stdout
    )
    loaded = backpack("-c", "from backpack.checkpoint import load_trained\n"
                            "print(type(load_trained('backpack-gutenberg')).__name__)")
    assert loaded.returncode == 0 and loaded.stdout.strip() == "BackpackLM", (
        loaded.stderr
    )
    demo = backpack(*demo_args)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "loading" in demo.stdout and "[unmodified] The captain said" in demo.stdout
    continuation = demo.stdout.split("[unmodified] The captain said", 1)[1]
    assert continuation.strip(), demo.stdout  # 5 new tokens (they may hold line breaks)

    # 5. nothing was written into the venv besides the install; the cache is the user's
    assert snapshot(site_packages) == before
    assert (
        not (site_packages / "data").exists()
        and not (site_packages / ".cache").exists()
    )
