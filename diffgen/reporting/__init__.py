"""What a run says about itself: the QC report (JSON and HTML), Great Expectations results, package versions."""
