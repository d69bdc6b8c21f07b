from atoll import isolated


@isolated()
def my_function():
    return "Hello World"


print(my_function())
