"""Links to the electronic medical record (issue 12): patient identity and reconciliation
(`reconciliation`), orders ⇄ the Modality Worklist (`orders`), orders completed by arriving
images (`order_links`)."""
