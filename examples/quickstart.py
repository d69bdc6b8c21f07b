"""The quick-start example: runs against the atoll server at ATOLL_HOST."""

import os

from atoll import isolated


@isolated(keep_alive=30)
def where_am_i(greeting: str) -> str:
    import os
    import platform

    print(f"{greeting} from the worker (pid {os.getpid()})")
    os.system("echo output of a child process streams too")
    return f"ran on {platform.node()} with Python {platform.python_version()}"


print(where_am_i("hello"))
print(where_am_i("hello again"), "(same warm worker)")
print("caller pid", os.getpid())
