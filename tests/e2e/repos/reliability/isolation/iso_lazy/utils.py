WHO = "lazy"
