"""The kernels a source tree declares, found by scanning it (never a hand-written table): CUDA ``__global__``
functions in C++/CUDA files, with their namespaces (also macro-named ones), template heads and SFINAE
return types, each branch of an ``#if`` scanned from the same state; struct/class definitions that CUTLASS
kernels are instantiated with; and Triton ``@triton.jit`` (autotune/heuristics-wrapped) functions in Python.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

CUDA_SUFFIXES = (".cu", ".cuh", ".h", ".hpp", ".cpp", ".cc", ".cxx", ".c", ".inl")

# Origins: where a kernel's code lives.
ORIGIN_VLLM_CSRC = "vllm-csrc"
ORIGIN_VLLM_TRITON = "vllm-triton"
ORIGIN_CUSTOM = "custom"


@dataclass(frozen=True)
class KernelDecl:
    """One ``__global__`` (or ``@triton.jit``) function found in a source tree."""

    name: str                 # base name, e.g. "fused_add_rms_norm_kernel"
    namespace: str            # enclosing namespaces joined by "::", "" for the global one
    file: str                 # path relative to the scanned root's parent label, e.g. "csrc/layernorm_kernels.cu"
    line: int
    is_definition: bool       # False for a bare declaration (``__global__ void Marlin(...);``)
    language: str             # "cuda" or "triton"
    origin: str               # ORIGIN_VLLM_CSRC, ORIGIN_VLLM_TRITON or ORIGIN_CUSTOM

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}::{self.name}" if self.namespace else self.name


# ------------------------------------------------------------------------------------------- CUDA sources

_TOKEN = re.compile(r"[A-Za-z_]\w*(?:\s*::\s*~?[A-Za-z_]\w*)*|::|&&|\|\||[{}()<>;,=\[\]]|\S")


def _blank_comments_and_strings(text: str) -> str:
    """Replace comments, string/char literals and preprocessor lines by spaces, keeping newlines
    (so line numbers stay right and braces inside them don't count). Conditional directives become
    __PP_IF__/__PP_ELSE__/__PP_ENDIF__ markers: each branch of an #if is scanned from the same state."""
    out = []
    i = 0
    n = len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":
            # Preprocessor directive, with backslash continuations.
            j = i
            while j < n:
                if text[j] == "\n" and text[j - 1] != "\\":
                    break
                j += 1
            directive = re.match(r"#\s*(\w*)", text[i:j]).group(1)
            marker = {"if": "__PP_IF__", "ifdef": "__PP_IF__", "ifndef": "__PP_IF__", "elif": "__PP_ELSE__",
                      "elifdef": "__PP_ELSE__", "elifndef": "__PP_ELSE__", "else": "__PP_ELSE__",
                      "endif": "__PP_ENDIF__"}.get(directive, "")
            out.append(marker + " " + "".join("\n" if ch == "\n" else "" for ch in text[i:j]))
            i = j
            continue
        if c.isspace():
            out.append(c)
            if c == "\n":
                at_line_start = True
            i += 1
            continue
        at_line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join("\n" if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == '"' and text.startswith('R"', i - 1) and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_")):
            # Raw string R"delim( ... )delim"
            m = re.match(r'"([^(\s]{0,16})\(', text[i:])
            end_marker = ")" + (m.group(1) if m else "") + '"'
            j = text.find(end_marker, i + 1)
            j = n if j < 0 else j + len(end_marker)
            out.append('""' + "".join("\n" if ch == "\n" else " " for ch in text[i + 2:j]))
            i = j
        elif c in "\"'":
            # Digit separators (1'000) are not quotes.
            if c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum() and \
                    not (i + 2 < n and text[i + 2] == "'"):
                out.append(" ")
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * max(0, j - i - 2) + (c if j - i >= 2 else ""))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _tokens_with_lines(code: str) -> list[tuple[str, int]]:
    tokens = []
    line = 1
    pos = 0
    for m in _TOKEN.finditer(code):
        line += code.count("\n", pos, m.start())
        pos = m.start()
        tokens.append((re.sub(r"\s+", "", m.group(0)), line))
    return tokens


def _skip_balanced(tokens: list[tuple[str, int]], i: int, open_t: str, close_t: str) -> int:
    """Index just past the bracket group that starts at tokens[i] == open_t."""
    depth = 0
    while i < len(tokens):
        t = tokens[i][0]
        if t == open_t:
            depth += 1
        elif t == close_t:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _parse_global(tokens: list[tuple[str, int]], i: int) -> tuple[str, bool] | None:
    """From tokens[i] == "__global__": the declared (possibly qualified) name and whether a body follows."""
    j = i + 1
    angle = 0
    last_ident = None
    n = len(tokens)
    while j < n:
        t = tokens[j][0]
        if t == "(":
            # Parentheses inside a return type's template arguments (SFINAE conditions) or after an
            # attribute macro (__launch_bounds__(...)) are not the parameter list.
            if angle > 0 or (last_ident and last_ident.startswith("__") and last_ident.endswith("__")):
                j = _skip_balanced(tokens, j, "(", ")")
                last_ident = None
                continue
            if last_ident is None:
                return None
            after = _skip_balanced(tokens, j, "(", ")")
            # Trailing qualifiers / attributes before the body or the semicolon.
            k = after
            while k < n and tokens[k][0] not in ("{", ";", "__global__"):
                k += 1
            return last_ident, k < n and tokens[k][0] == "{"
        if t == "<":
            angle += 1
        elif t == ">" and angle > 0:
            angle -= 1
        elif t in (";", "{", "}"):
            return None
        elif re.match(r"[A-Za-z_]", t):
            last_ident = t
        j += 1
    return None


def _is_type_definition(tokens: list[tuple[str, int]], j: int) -> bool:
    """After ``struct``/``class``: does a body follow the name (through a base clause / specialisation)?"""
    k = j + 1
    depth = 0
    while k < len(tokens) and k < j + 80:
        t = tokens[k][0]
        if t == "<":
            depth += 1
        elif t == ">":
            depth -= 1
        elif depth <= 0 and t == "{":
            return True
        elif depth < 0 or t in ("}", "__global__") or (depth == 0 and t in (";", "(", ")", "=", ",")):
            return False
        k += 1
    return False


def scan_cuda_sources(root: Path, label: str, origin: str = ORIGIN_VLLM_CSRC,
                      with_types: bool = False) -> list[KernelDecl]:
    """Every ``__global__`` function under ``root`` (files with CUDA/C++ suffixes), with namespaces; with
    ``with_types`` also every struct/class definition (language "cuda-type": CUTLASS kernels are named after
    the types they are instantiated with, not after a __global__ function of the fork).

    ``label`` prefixes the reported paths (``csrc`` -> ``csrc/layernorm_kernels.cu``).
    """
    decls: list[KernelDecl] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in CUDA_SUFFIXES:
            continue
        try:
            raw = path.read_text(errors="replace")
        except OSError:
            continue
        if "__global__" not in raw and not (with_types and ("struct" in raw or "class" in raw)):
            continue
        rel = f"{label}/{path.relative_to(root).as_posix()}" if label else path.relative_to(root).as_posix()
        tokens = _tokens_with_lines(_blank_comments_and_strings(raw))
        # Namespaces named by a macro (``namespace MARLIN_NAMESPACE_NAME {``): the file's own #define.
        defines = dict(re.findall(r"^[ \t]*#[ \t]*define[ \t]+([A-Z_][A-Z0-9_]*)[ \t]+([A-Za-z_]\w*)[ \t]*$", raw,
                                  re.MULTILINE))
        # Brace stack: a namespace name (possibly "a::b"; "" for anonymous) or None for other blocks.
        stack: list[str | None] = []
        pending_ns: str | None = None
        i = 0
        saved: list[list[str | None]] = []
        while i < len(tokens):
            t, line = tokens[i]
            if t == "__PP_IF__":
                saved.append(list(stack))
            elif t == "__PP_ELSE__":
                if saved:
                    stack = list(saved[-1])
            elif t == "__PP_ENDIF__":
                if saved:
                    saved.pop()
            elif t == "namespace":
                nxt = tokens[i + 1][0] if i + 1 < len(tokens) else ""
                if nxt == "{":
                    pending_ns = ""
                elif re.match(r"[A-Za-z_]", nxt) and i + 2 < len(tokens) and tokens[i + 2][0] == "{":
                    pending_ns = nxt
                    i += 1
            elif t == "{":
                stack.append(pending_ns)
                pending_ns = None
            elif t == "}":
                if stack:
                    stack.pop()
            elif t == ";":
                pending_ns = None
            elif t in ("struct", "class") and with_types and i + 1 < len(tokens) and \
                    re.match(r"[A-Za-z_]", tokens[i + 1][0]) and (i == 0 or tokens[i - 1][0] != "enum"):
                if _is_type_definition(tokens, i + 1):
                    name = tokens[i + 1][0].split("::")[-1]
                    decls.append(KernelDecl(name=name, namespace="::".join(defines.get(s, s) for s in stack if s),
                                            file=rel, line=line, is_definition=True, language="cuda-type",
                                            origin=origin))
            elif t == "__global__":
                parsed = _parse_global(tokens, i)
                if parsed:
                    qualified, is_def = parsed
                    parts = qualified.split("::")
                    ns_parts = [defines.get(s, s) for s in stack if s] + parts[:-1]
                    decls.append(KernelDecl(name=parts[-1], namespace="::".join(ns_parts), file=rel, line=line,
                                            is_definition=is_def, language="cuda", origin=origin))
            i += 1
    return decls


# ----------------------------------------------------------------------------------------- Triton sources

_TRITON_DECORATOR = re.compile(r"^(triton\.(jit|autotune|heuristics)|jit|tl\.jit|libentry|triton_op)\b")


def scan_triton_sources(root: Path, label: str, origin: str) -> list[KernelDecl]:
    """Every ``@triton.jit`` (or autotune/heuristics-wrapped) function in Python files under ``root``."""
    decls: list[KernelDecl] = []
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if "triton" not in text and "@jit" not in text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        rel = f"{label}/{path.relative_to(root).as_posix()}" if label else path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if _TRITON_DECORATOR.match(ast.unparse(target)):
                    decls.append(KernelDecl(name=node.name, namespace="", file=rel, line=node.lineno,
                                            is_definition=True, language="triton", origin=origin))
                    break
    return decls
