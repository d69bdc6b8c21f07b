# Needs a network that reaches example.com; the test suite skips it.
from atoll import isolated
@isolated(keep_alive=10, requirements=["requests"])
def get_response(url):
    import requests
    response = requests.get(url)
    return response.text
get_response('https://www.example.com') # First call (slower)
get_response('https://www.anotherexample.com') # Second call (faster)
