WHO = "a-namespace"
