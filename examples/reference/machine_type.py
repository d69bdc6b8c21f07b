from atoll import isolated

requirements = ["pyjokes"]

@isolated(requirements=requirements, machine_type="M")
def my_function():
  import pyjokes
  return pyjokes.get_joke()

my_function_L = my_function.on(machine_type="L")

print(my_function()) # executed on machine type `M`
print(my_function_L()) # same as my_function but executed on machine type `L`
