"""backpack: Backpack Language Models, exported from the chapters of backpack-book.

Each module is written in one chapter of the book (see the header of each file). This
file and __main__.py (the `backpack` command) are the hand-written parts of the package.
"""
__version__ = "0.1.0"
