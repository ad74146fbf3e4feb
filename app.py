"""gdino's labeling app, locally (`python app.py --help`) and as a Hugging Face Space."""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv=None) -> int:
    from ui import build_app, launch, parse_args

    config = parse_args(argv)
    from gdino.memory import keep_freed_memory
    from gdino.ops import compiled

    try:
        keep_freed_memory()  # before any thread allocates (the kernel build, the server's workers): gdino/memory.py
    except ValueError as err:  # a mistyped GDINO_MALLOC
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        demo, app = build_app(config)
    except ValueError as err:  # the workspace cannot be made private or keep the session key (a link, damaged)
        print(f"error: {err}", file=sys.stderr)
        return 2
    # only once the start is accepted: a build still running in its daemon thread when the interpreter exits
    # aborts the process (exit -6, not 2); the first detection should not wait for it
    compiled.prepare_in_background()
    for note in app.sessions.notes:  # what the start changed in the workspace (made private, expired projects)
        print(f"note: {note}", file=sys.stderr)
    # load both models now, so the log and the page say at once which one is missing and which flag fixes it
    for problem in app.hub.check_at_start():
        print(f"warning: {problem}", file=sys.stderr)
    print(f"models: {app.hub.status}", file=sys.stderr)
    launch(demo, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
