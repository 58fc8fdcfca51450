"""Model families (chat layout, audio placeholders, encoder and language-model pieces), loading
and the toy builders.
"""
