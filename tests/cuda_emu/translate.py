"""cuda_emu: turns a .cu file into C++ for the emulator. The one thing a C++ compiler cannot read
is the launch syntax; each `kernel<<<config>>>(args)` becomes

    ::cuda_emu::launch("file:line", "writes", ::cuda_emu::config(config), [=](auto... a) { kernel(a...); }, args)

(the lambda lets a kernel template deduce its arguments, as nvcc does). "writes" has a 1 for
each parameter of the kernel's declaration that is a pointer to non-const memory (what the
kernel may write), a 0 for the others, read from the `__global__` declarations of the file and
of the .cuh files it includes; the emulator's stream-order checker treats the other pointers as
reads (nullptr when the declaration is not found: every pointer counts as a write). Lines are
kept, so compiler messages point at the .cu file's own lines (a #line directive names it).

usage: translate.py INPUT.cu OUTPUT.cpp
"""
import os
import re
import sys


def matching(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_:
            depth += 1
        elif text[i] == close:
            depth -= 1
            if depth == 0:
                return i
    raise SystemExit(f"translate.py: unbalanced {open_}{close} from offset {start}")


def kernel_start(text: str, end: int) -> int:
    """Start of the kernel expression that ends just before `end` (a name, maybe with <...>)."""
    i = end
    if text[i - 1] == ">":  # template arguments
        depth = 0
        while True:
            i -= 1
            if text[i] == ">":
                depth += 1
            elif text[i] == "<":
                depth -= 1
                if depth == 0:
                    break
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def split_params(params: str) -> list:
    """The parameters of a declaration, split at top-level commas."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(params):
        if c in "(<[":
            depth += 1
        elif c in ")>]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(params[start:i])
            start = i + 1
    if params[start:].strip():
        parts.append(params[start:])
    return parts


def written_params(text: str) -> dict:
    """For each __global__ kernel declared in text: '1' per parameter that points to non-const
    memory, '0' per other parameter."""
    masks = {}
    for m in re.finditer(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(", text):
        close = matching(text, m.end() - 1, "(", ")")
        mask = ""
        for p in split_params(text[m.end():close]):
            star = p.rfind("*")
            mask += "1" if star >= 0 and "const" not in p[:star] else "0"
        masks.setdefault(m.group(1), mask)
    return masks


def translate(text: str, name: str, masks: dict) -> str:
    out, pos = [], 0
    for m in re.finditer(r"<<<", text):
        if m.start() < pos:
            continue
        k0 = kernel_start(text, m.start())
        cfg_end = text.index(">>>", m.end())
        paren = m.start() + (cfg_end + 3 - m.start())
        while text[paren].isspace():
            paren += 1
        if text[paren] != "(":
            raise SystemExit(f"translate.py: {name}: no argument list after >>>")
        close = matching(text, paren, "(", ")")
        kernel = text[k0:m.start()]
        config = text[m.end():cfg_end]
        args = text[paren + 1:close]
        line = text.count("\n", 0, m.start()) + 1
        base = re.sub(r"<.*$", "", kernel, flags=re.S).split("::")[-1].strip()
        writes = f'"{masks[base]}"' if base in masks else "nullptr"
        call = (f'::cuda_emu::launch("{name}:{line}", {writes}, ::cuda_emu::config({config}), '
                f"[=](auto... a) {{ {kernel}(a...); }}" + (f", {args}" if args.strip() else "") + ")")
        out.append(text[pos:k0])
        out.append(call)
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def main() -> int:
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        text = f.read()
    declared = text
    for inc in re.findall(r'#include\s+"([^"]+\.cuh)"', text):
        for folder in (os.path.dirname(src), os.path.join(os.path.dirname(src), "..")):
            path = os.path.join(folder, inc)
            if os.path.isfile(path):
                with open(path) as f:
                    declared += "\n" + f.read()
                break
    result = f'#line 1 "{src}"\n' + translate(text, os.path.basename(src), written_params(declared))
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    with open(dst, "w") as f:
        f.write(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
