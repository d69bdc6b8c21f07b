# The reference's placeholders 'your-key-id' and 'your-key-secret' stand for
# a real key; this copy reads one from the environment, and adds the colon
# the reference's `def my_function()` lacks.
import os

from atoll import isolated, CloudKeyCredentials

credentials = CloudKeyCredentials(key_id=os.environ["ATOLL_KEY_ID"], key_secret=os.environ["ATOLL_KEY_SECRET"])

@isolated(credentials=credentials)
def my_function():
    return "hello world"

print(my_function())
