from atoll import isolated

requirements = ["pyjokes"]

@isolated(requirements=requirements, machine_type="M")
def my_function():
  import pyjokes
  return pyjokes.get_joke()

from atoll import isolated, local

my_function_local = my_function.on(local)

from atoll import cloud

my_function_cloud = my_function_local.on(cloud, machine_type="M")

from atoll import isolated, local

requirements = ["pyjokes"]

@isolated(requirements=requirements, host=local)
def my_function_local2():
  import pyjokes
  return pyjokes.get_joke()

print(my_function_local())
print(my_function_cloud())
print(my_function_local2())
