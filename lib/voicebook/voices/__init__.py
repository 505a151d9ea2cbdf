"""What more than one stage reads of a voice, under the stages so that none imports another for
it: the voices a search made (``store``: training's export and the evaluation read them) and the
reference clips a voice is made from (``references``: the search and the evaluation choose them
alike)."""
