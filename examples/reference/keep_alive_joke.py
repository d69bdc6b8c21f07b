from atoll import isolated

@isolated(keep_alive=20, requirements=["pyjokes"])
def get_joke():
    import pyjokes
    return pyjokes.get_joke()

print(get_joke())
print(get_joke())
