WHO = "b-regular"
