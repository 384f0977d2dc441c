from ipc.verbs import reference

print(reference())
