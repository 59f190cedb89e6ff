VALUE = "late helper imported on a thread"
