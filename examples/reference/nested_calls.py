from atoll import isolated

@isolated(requirements=["pyjokes"], machine_type='GPU', keep_alive=10)
def isolated_joke() -> str:
    import pyjokes
    return pyjokes.get_joke()

@isolated(requirements=["cowsay", "atoll"])
def tell_jokes():
    import cowsay
    cowsay.cow(isolated_joke())
    cowsay.fox(isolated_joke())

tell_jokes()
