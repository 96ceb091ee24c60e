"""cuda_emu: turns a .cu file into C++ for the emulator. The one thing a C++ compiler cannot read
is the launch syntax; each `kernel<<<config>>>(args)` becomes

    ::cuda_emu::launch("file:line", ::cuda_emu::config(config), [=](auto... a) { kernel(a...); }, args)

(the lambda lets a kernel template deduce its arguments, as nvcc does). Lines are kept, so
compiler messages point at the .cu file's own lines (a #line directive names it).

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


def translate(text: str, name: str) -> str:
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
        call = (f'::cuda_emu::launch("{name}:{line}", ::cuda_emu::config({config}), '
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
    result = f'#line 1 "{src}"\n' + translate(text, os.path.basename(src))
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    with open(dst, "w") as f:
        f.write(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
