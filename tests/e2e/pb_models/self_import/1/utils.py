"""A sibling module with a name other models use too."""
WHO = "self_import utils"
