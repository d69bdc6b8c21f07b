"""The quick-start example: runs against the atoll server at ATOLL_HOST
(or a local one the SDK starts)."""

import os

from atoll import isolated


@isolated(requirements=["pyjokes"], machine_type="M", keep_alive=30)
def joke():
    import pyjokes

    return pyjokes.get_joke()


@isolated(keep_alive=30)
def where_am_i(greeting: str) -> str:
    import os
    import platform

    print(f"{greeting} from the worker (pid {os.getpid()})")
    os.system("echo output of a child process streams too")
    return f"ran on {platform.node()} with Python {platform.python_version()}"


print(where_am_i("hello"))
print(where_am_i("hello again"), "(same warm worker)")
print("a joke from a worker that has pyjokes installed:", joke())
print("caller pid", os.getpid())
