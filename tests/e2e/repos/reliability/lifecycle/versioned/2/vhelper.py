TAG = "two"
