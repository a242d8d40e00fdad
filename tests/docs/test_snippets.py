"""Every fenced code block of README.md and docs/*.md runs, so the docs cannot rot.

Pages are found by glob when the tests are collected (a page written tomorrow is tested
tomorrow); each page is one test case, its id the page name (``README.md``, ``cache.md``). A
failure names the page, the line of the block's opening fence, the block and the exception.

Blocks, by the language of their fence:

- ```` ```python ````: executed in order, one namespace per page (like a doctest session: a
  block uses what the blocks above it defined). The namespace is a real module registered in
  ``sys.modules``, so functions defined on the page pickle by reference into forked DataLoader
  workers, as a user's own module's would. ``print`` output is captured (shown on failure).
- ```` ```bash ```` / ```` ```sh ```` / ```` ```console ````: every command line is run with
  the venv's interpreter in the page's folder and must exit 0. In ``console`` blocks only lines
  with a ``$ `` prompt are commands (the rest is output). Commands run: ``wan-data ...``,
  ``python examples/NAME.py ...`` and ``python -m wan_data ...`` (also spelled
  ``.venv/bin/python``, ``.venv/bin/wan-data``, with ``VAR=value`` prefixes); ``#`` comments
  and ``\\`` continuations are understood. Skipped by rule: the set-up commands ``./run demo``,
  ``./run test`` (they install, and ``./run test`` runs the whole suite) and ``pip install``.
  Any other command (``jq``, ``git``, benchmarks, pytest) fails the page unless the block is
  marked ``skip`` with a reason: a shell block either runs or says why not.
- every other language (``text``, ``toml``, ``json``, ``jsonl``, ``csv``, ``yaml``, ...) is not
  executed. A fence without a language fails the page: say ``text`` for output and diagrams,
  ``bash`` for commands, so that nothing escapes by omission.

Markers, HTML comments (invisible on GitHub) on the line(s) just above the fence:

- ``<!-- snippet: skip: REASON -->``: not executed. REASON is mandatory (``needs a GPU``,
  ``needs the 14B model``, ``a multi-node cluster``); an empty one fails the page.
- ``<!-- snippet: from examples/NAME.py -->``: the block is checked, not executed: each part
  between ``...`` lines must appear verbatim, in order, in that script (a common indentation
  shift allowed; a first line ``# examples/NAME.py`` is a label, not code). The script itself
  runs in tests/test_examples.py.
- ``<!-- snippet: file NAME -->`` on a non-executed block (``toml``, ``json``...): its text is
  written to ``NAME`` in the page's folder, so later blocks can read it.
- ``<!-- snippet: continue -->``: accepted and ignored (a page is one session anyway).

The folder every block runs in (its cwd; a fresh one per page, so pages cannot see each
other's outputs). Write blocks against these names:

- ``data/``: the examples' dataset (``examples/example_data.py`` ``make_example_data``, a copy
  per page): ``data/videos/`` 7 captioned clips of 2.5 s at 16 and 24 fps, 96x64, 64x96 and
  64x64 (three buckets at ``resolution=(64, 64)``); ``data/short/videos/`` 3 clips of 1.25 s;
  ``data/broken/`` 4 files no decoder opens (empty, random bytes, text, a cut mp4). Use small
  options: ``frames=[17], fps=16, resolution=(64, 64)`` (a preset's 81 frames need 5 s clips).
- ``vae/``: a tiny random Wan 2.1 VAE (``wan_data.tools.synthetic.make_tiny_wan_vae``, z 16).
- ``vae_ti2v/``: the tiny Wan 2.2 TI2V-5B VAE layout (z 48, spatial factor 16).
- ``text_encoder/``: a tiny UMT5 encoder and its tokenizer in one folder
  (tests/conditioning_fixtures.py ``make_tiny_text_encoder``; d_model 16).
- ``image_encoder/``: a tiny CLIP vision encoder and its processor in one folder
  (``make_tiny_clip``; hidden size 8, 257 tokens).
- ``wan_i2v/``: a Wan 2.1 I2V Diffusers repo layout (``model_index.json``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``image_encoder/``, ``image_processor/``) of the same tiny
  models, for blocks that pass one repo to ``vae=``, ``text_encoder=`` and ``image_encoder=``.

``HF_HUB_OFFLINE=1`` everywhere: nothing is downloaded. ``PENDING`` lists pages, owned by
others, that do not pass yet (xfail, not strict, with the reason), so a fix turns them green.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import traceback
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
VENV_BIN = Path(sys.executable).parent
PAGES = sorted([REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])

# The pages run the pipeline through DataLoader workers: about 2 minutes on 2 busy cores.
pytestmark = pytest.mark.integration

# Pages whose blocks do not pass yet, owned by other writers: page name -> what fails.
PENDING: dict[str, str] = {}

RUN_LANGS = {"bash", "sh", "shell", "console"}
PYTHON_LANGS = {"python", "py", "python3"}
COMMAND_TIMEOUT_S = 240

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<body>.*?)\s*-->\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text (dedented) and its markers."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    markers: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the snippet markers just above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.name
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : j]
        ]
        markers: list[str] = []
        k = i - 1
        while k >= 0 and (not lines[k].strip() or MARKER.match(lines[k])):
            found = MARKER.match(lines[k])
            if found:
                markers.insert(0, found.group("body"))
            k -= 1
        code = textwrap.dedent("\n".join(body))
        blocks.append(Block(page, i + 1, m.group("info").lower(), code, tuple(markers)))
        i = j + 1
    return blocks


# --------------------------------------------------------------------------- the workspace


def _load_example_data() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("example_data", EXAMPLES / "example_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared inputs (see the module docstring), built once for all pages."""
    from conditioning_fixtures import make_tiny_clip, make_tiny_text_encoder, make_tiny_wan_i2v_repo

    from wan_data.tools.synthetic import make_tiny_wan_vae

    root = tmp_path_factory.mktemp("docs_workspace")
    _load_example_data().make_example_data(root / "data")
    make_tiny_wan_vae(root / "vae", variant="wan2.1")
    make_tiny_wan_vae(root / "vae_ti2v", variant="wan2.2")
    make_tiny_text_encoder(root / "text_encoder")
    make_tiny_clip(root / "image_encoder")
    repo = make_tiny_wan_i2v_repo(root / "wan_i2v")
    shutil.copytree(root / "text_encoder", repo / "text_encoder")
    shutil.copytree(root / "text_encoder", repo / "tokenizer")
    return root


@contextlib.contextmanager
def page_folder(workspace: Path, tmp: Path) -> Iterator[Path]:
    """A fresh cwd for one page: a copy of ``data/`` (pages may write captions), links to the
    read-only models, ``HF_HUB_OFFLINE=1``; cwd and environment restored afterwards."""
    for entry in workspace.iterdir():
        if entry.name == "data":
            shutil.copytree(entry, tmp / entry.name)
        else:
            (tmp / entry.name).symlink_to(entry, target_is_directory=True)
    old_cwd, old_env = Path.cwd(), dict(os.environ)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.chdir(tmp)
    try:
        yield tmp
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


# --------------------------------------------------------------------------- markers


@dataclasses.dataclass
class Directives:
    skip: str | None = None
    source: str | None = None
    file: str | None = None


def directives(block: Block) -> Directives:
    """Read a block's markers; a malformed one (an empty skip reason) fails the page."""
    out = Directives()
    for body in block.markers:
        if body == "continue":
            continue
        if body == "skip" or body.startswith("skip:") or body.startswith("skip "):
            reason = body[4:].lstrip(": ").strip()
            if not reason:
                raise AssertionError(f"{block.where}: `snippet: skip` needs a reason after 'skip:'")
            out.skip = reason
        elif m := re.fullmatch(r"from\s+(examples/[\w./-]+\.py)", body):
            out.source = m.group(1)
        elif m := re.fullmatch(r"file\s+(\S+)", body):
            out.file = m.group(1)
        else:
            raise AssertionError(f"{block.where}: unknown snippet marker {body!r}")
    return out


def check_from_script(block: Block, script: str) -> None:
    """Each part of the block between ``...`` lines is in the script verbatim, in order."""
    path = REPO / script
    assert path.is_file(), f"{block.where}: {script} does not exist"
    source = path.read_text(encoding="utf-8").splitlines()
    lines = block.code.splitlines()
    if lines and re.fullmatch(r"#\s*examples/[\w./-]+\.py", lines[0].strip()):
        lines = lines[1:]
    parts: list[list[str]] = [[]]
    for line in lines:
        if line.strip() == "...":
            parts.append([])
        else:
            parts[-1].append(line)
    at = 0
    for part in parts:
        part = textwrap.dedent("\n".join(part)).strip("\n").splitlines()
        if not part:
            continue
        found = _find_part(part, source, at)
        if found < 0:
            # The longest prefix that is there, to name the first line that is not.
            good = max(
                (n for n in range(1, len(part)) if _find_part(part[:n], source, at) >= 0), default=0
            )
            shown = "\n".join(part)
            raise AssertionError(
                f"{block.where}: this part of the block is not in {script} verbatim "
                f"(in order, after line {at}); the first line that breaks it: "
                f"{part[good]!r}\n{shown}\n(mark left-out lines with a line `...`)"
            )
        at = found + len(part)


def _find_part(part: list[str], source: list[str], start: int) -> int:
    """Index of the first script line where ``part`` appears under one indentation, or -1."""
    for i in range(start, len(source) - len(part) + 1):
        first = source[i]
        if not first.endswith(part[0]):
            continue
        prefix = first[: len(first) - len(part[0])]
        if prefix.strip():
            continue
        if all(
            (src.strip() == "" if not want.strip() else src == prefix + want)
            for want, src in zip(part, source[i : i + len(part)], strict=True)
        ):
            return i
    return -1


# --------------------------------------------------------------------------- shell blocks


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """(line, command) of a shell block: continuations joined, console output left out."""
    commands: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for n, raw in enumerate(block.code.splitlines(), start=block.line + 1):
        line = raw.rstrip()
        if pending is None:
            if block.lang == "console":
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pending, start = "", n
        elif block.lang == "console" and line.lstrip().startswith("> "):
            line = line.lstrip()[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append((start, pending + line))
        pending = None
    if pending is not None:
        commands.append((start, pending))
    return commands


SKIPPED_BY_RULE = re.compile(r"^(\./run\s|(\S*/)?pip3?\s+install\b|(\S*/)?python3?\s+-m\s+pip\s)")


def command_argv(command: str) -> tuple[list[str], dict[str, str]] | str:
    """The argv and extra environment of a command we run, ``"rule"`` for a set-up command
    skipped by rule, or ``"unsupported"``."""
    if SKIPPED_BY_RULE.match(command.strip()):
        return "rule"
    words = shlex.split(command, comments=True)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if not words:
        return "unsupported"
    head = words[0]
    if head in {"wan-data", ".venv/bin/wan-data"} or head.endswith("/.venv/bin/wan-data"):
        return [str(VENV_BIN / "wan-data"), *words[1:]], env
    is_python = re.fullmatch(r"(\S*/)?python3?", head) is not None
    if is_python and len(words) > 1:
        if words[1] == "-m" and len(words) > 2 and re.fullmatch(r"wan_data(\.\w+)*", words[2]):
            return [sys.executable, *words[1:]], env
        if words[1].startswith("examples/"):
            return [sys.executable, str(REPO / words[1]), *words[2:]], env
    return "unsupported"


def run_shell_block(block: Block) -> None:
    for line, command in shell_commands(block):
        argv = command_argv(command)
        if argv == "rule":
            continue
        if argv == "unsupported":
            raise AssertionError(
                f"{block.page}:{line}: `{command}` is not a command this test runs (wan-data, "
                "python examples/..., python -m wan_data): make it one, or mark the block "
                "<!-- snippet: skip: REASON -->"
            )
        assert not isinstance(argv, str)
        args, extra = argv
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{block.page}:{line}: `{command}` exited {done.returncode}\n"
                f"--- stdout (tail)\n{done.stdout[-2000:]}\n"
                f"--- stderr (tail)\n{done.stderr[-4000:]}"
            )


# --------------------------------------------------------------------------- python blocks


def page_module(page: str) -> types.ModuleType:
    """A fresh module for a page's session, registered so its functions pickle by name."""
    name = "wan_data_docs_" + re.sub(r"\W", "_", page.removesuffix(".md"))
    module = types.ModuleType(name)
    module.__file__ = str(REPO / page)
    sys.modules[name] = module
    return module


def run_python_block(block: Block, module: types.ModuleType, path: Path) -> None:
    # Padded with blank lines so tracebacks give the page's own line numbers.
    code = compile("\n" * block.line + block.code, str(path), "exec")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(code, module.__dict__)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        shown = traceback.format_exc(limit=-8)
        raise AssertionError(
            f"{block.where}: the ```python block raised {type(exc).__name__}\n"
            f"--- block\n{block.code}\n--- printed (tail)\n{out.getvalue()[-1500:]}\n"
            f"--- traceback\n{shown}"
        ) from None


# --------------------------------------------------------------------------- the tests


def _page_param(path: Path) -> object:
    marks = []
    if path.name in PENDING:
        marks.append(pytest.mark.xfail(reason=PENDING[path.name], strict=False))
    return pytest.param(path, id=path.name, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("path", [_page_param(p) for p in PAGES])
def test_page(path: Path, workspace: Path, tmp_path: Path) -> None:
    """Run (or check) every block of one page, in order, in one session."""
    blocks = parse_blocks(path)
    module = page_module(path.name)
    failure: str | None = None
    try:
        with page_folder(workspace, tmp_path):
            for block in blocks:
                todo = directives(block)
                if not block.lang:
                    raise AssertionError(
                        f"{block.where}: a fence without a language: say ```text for output or "
                        "diagrams, ```bash for commands, ```python for code"
                    )
                if todo.skip is not None:
                    continue
                if todo.source is not None:
                    check_from_script(block, todo.source)
                elif block.lang in PYTHON_LANGS:
                    run_python_block(block, module, path)
                elif block.lang in RUN_LANGS:
                    run_shell_block(block)
                elif todo.file is not None:
                    target = tmp_path / todo.file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(block.code + "\n", encoding="utf-8")
    except AssertionError as exc:
        failure = str(exc)  # reported below, outside the handler: no chained traceback
    finally:
        sys.modules.pop(module.__name__, None)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def test_parser_and_markers(tmp_path: Path) -> None:
    """The conventions themselves: markers, skip reasons, console prompts, the verbatim check."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- snippet: skip: needs a GPU -->\n```python\nimport nothing\n```\n\n"
        "<!-- snippet: skip -->\n\n```python\nx = 1\n```\n"
        "- item\n\n  ```console\n  $ wan-data scan data/ \\\n  >   --fps 16\n  output\n  ```\n"
        "```bash\n./run test\npip install -e .\njq . x\n```\n",
        encoding="utf-8",
    )
    gpu, empty, console, bash = parse_blocks(page)
    assert directives(gpu).skip == "needs a GPU" and gpu.line == 2
    with pytest.raises(AssertionError, match="needs a reason"):
        directives(empty)
    [(line, command)] = shell_commands(console)
    assert line == 14 and command.split() == ["wan-data", "scan", "data/", "--fps", "16"]
    kinds = [command_argv(c) for _, c in shell_commands(bash)]
    assert kinds == ["rule", "rule", "unsupported"]
    argv = command_argv("HF_HUB_OFFLINE=1 .venv/bin/python -m wan_data scan data/")
    assert not isinstance(argv, str) and argv[0][1:3] == ["-m", "wan_data"]
    script = Block("p.md", 1, "python", "# examples/x.py\nb = 2\n...\n    return y\n", ())
    assert _find_part(["b = 2"], ["a = 1", "b = 2"], 0) == 1
    assert _find_part(["return y"], ["def f():", "    return y"], 0) == 1
    assert _find_part(["return y"], ["def f():", "    return x"], 0) == -1
    assert script.code.startswith("# examples/x.py")
    real = "# examples/example_data.py\ndef make_example_data(root: str | Path) -> Path:\n"
    check_from_script(
        Block("p.md", 1, "python", real + "...\n    return root\n", ()), "examples/example_data.py"
    )
    wrong = Block("p.md", 1, "python", real + "    root = 1\n", ())
    with pytest.raises(AssertionError, match="first line that breaks it: '    root = 1'"):
        check_from_script(wrong, "examples/example_data.py")
