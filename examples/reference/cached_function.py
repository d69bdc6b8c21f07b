import time
from atoll import isolated, cached

@cached
def my_cached_function():
    # Simulate a time-consuming calculation
    time.sleep(2)
    return "Hello, World!"

@isolated(keep_alive=10)
def my_isolated_function():
    result = my_cached_function()
    return f"The result is: {result}"

# Call the isolated function multiple times
result1 = my_isolated_function() # Takes more than 2 seconds
result2 = my_isolated_function() # Almost instant

print(result1) # Output: "The result is: Hello, World!"
print(result2) # Output: "The result is: Hello, World!"
