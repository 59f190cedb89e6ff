VALUE = "lazy helper"
