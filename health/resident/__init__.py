"""The resident's side of the health record: the patient summary (IPS, also as a FHIR document), the timeline, a
visit's summary as a PDF, and the apps (the VNeID display) a resident lets read the summary."""
