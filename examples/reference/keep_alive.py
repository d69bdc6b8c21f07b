from atoll import isolated
@isolated(keep_alive=300)
def get_two():
    return 1+1
print(get_two())
