TAG = "one"
