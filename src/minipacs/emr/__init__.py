"""The EMR's services (issue 12): orders ⇄ the Modality Worklist (`orders`), orders
completed by arriving images (`order_links`)."""
