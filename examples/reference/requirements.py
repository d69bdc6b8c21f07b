from atoll import isolated

requirements = ["pyjokes"]

@isolated(requirements=requirements)
def my_function():
  import pyjokes
  return pyjokes.get_joke()

print(my_function())
