"""Open311 GeoReport v2 at /open311/v2: the city's reports for existing Open311 apps and validators.

Resources (http://wiki.open311.org/GeoReport_v2), each as `.json`, `.xml` or without a suffix (JSON):
discovery, services (one per active feedback category), services/{code} (its definition), requests (public
reports only: the spec's filters plus the common page/page_size extension), requests/{id}, and POST
requests. Names come in Vietnamese, or English with `Accept-Language: en`. Every rule of a report stays in
feedback's own service.py; this package translates between Open311's shapes and ours: api.py the HTTP (formats,
errors), service.py the translation and the api keys, store.py its SQL, models.py its bodies.

Decisions:
- Status: open = submitted, received, in_progress; closed = answered, closed, rejected. An answered report
  counts as closed: the unit has responded (status_notes carries the answer) and the report closes by
  itself after 7 days; if its reporter reopens it, it is open again. status_notes is the answer, the
  rejection reason, "duplicate of #n", or for an open report our finer status ("Đã tiếp nhận"...).
  updated_datetime of a closed request is when it closed (the answer's time for an answered one), as the
  spec asks; expected_datetime is the answer deadline.
- POST needs both the client's api_key (403 without a good one, as the spec says) and the resident's own
  access token (`Authorization: Bearer`, the mobile app's token: reports in Hanoi are never anonymous).
  A missing or bad token is answered 403 as well, with body code 401: Open311 clients expect 400, 403 or
  404 and read the error array of those, while a 401 is taken by many as a transport failure.
  first_name, last_name, email, phone, account_id and device_id are ignored: identity comes from VNeID.
- Every report needs its ward: each service's definition lists a required `ward` attribute (a
  singlevaluelist of the ward and commune codes), sent as `attribute[ward]=<code>`, so metadata is true.
  lat and long are required (the place must be in Hanoi); address_string becomes the address.
- media_url is not fetched (this system reaches no outside network); the service_notice says so. In GET
  answers media_url is the absolute URL of the report's first public photo.
- Reports sent this way hide the reporter's name in the app's public view (the resident chose nothing),
  and no Open311 answer ever says who reported.
- Errors are Open311's array of {code, description}, in the requested format. HTTP 404 for what does not
  exist, 403 for the api_key or the resident's token, 400 for the rest; 429 and 5xx keep their status so
  retries and monitoring work. The body code is the app's own status (409, 401...) when more specific.
  The app's one error map (app.errors.handle_exception) decides statuses and logs; this file reshapes it.
- POST answers 200, not 201: the spec names no status, and some clients check for 200.
"""
