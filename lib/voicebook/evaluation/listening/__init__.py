"""The blind listening test: sessions and the ratings file (``session``), the widget panel
(``panel``) and what listeners said (``results``)."""
