"""Sources as data: each stream of CRM events declared once (:mod:`.catalogue`), in the
types of :mod:`.spec`; the generic pipeline runs them."""
