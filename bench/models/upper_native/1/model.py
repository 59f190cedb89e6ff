"""Never imported. This model sets the config parameter `rustpy.native = echo`,
so rustpy copies input i to output i in Rust without running Python: the
ceiling the Python variants are measured against. (rustpy still wants the
model file to exist.) If this file is ever imported, native echo is not
active, and the model must fail to load rather than pass for the ceiling."""
raise RuntimeError("this model must run with rustpy.native=echo (rustpy's native echo mode)")
