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
  access token (`Authorization: Bearer`, the mobile app's token: reports in Hanoi are never anonymous;
  401 without a good one). It checks, in order: that an api_key is sent, that a bearer token is sent at all
  (401: without one nothing else matters), every field of the form (all bad fields in one 400, nothing
  looked up yet), that the api_key is a client's, the resident's token (the
  route defers the kernel's token check: `bearer="deferred"`), and then what needs the database (the
  service_code, 404). first_name, last_name, email, phone, account_id and device_id are ignored: identity
  comes from VNeID.
- Every report needs its ward. Each service's definition lists a `ward` attribute (a singlevaluelist of
  the ward and commune codes, sent as `attribute[ward]=<code>`, so metadata is true), not required: when it
  is left out, the ward is derived from lat/long (feedback.places: the ward or commune whose centre is
  nearest, measured in that unit's size; data/WARD_CENTRES.md says where the centres come from and how
  often that is right). Where no ward is near enough, it is required. lat and long are required (the
  place must be in Hanoi); address_string becomes the address.
- media_url is not fetched (this system reaches no outside network); the service_notice says so. In GET
  answers media_url is the absolute URL of the report's first public photo.
- Reports sent this way hide the reporter's name in the app's public view (the resident chose nothing),
  and no Open311 answer ever says who reported.
- Errors are Open311's array of {code, description}, in the requested format, and the HTTP status is always
  the body's code: 400 for a bad field, 401 for the resident's token, 403 for the api_key, 404 for what
  does not exist, and the app's own status otherwise (409, 422, 429 with Retry-After, 5xx), so a client
  never sees one status in the header and another in the body. The app's one error map
  (app.errors.handle_exception) decides statuses and logs; api.py reshapes its answer.
- POST answers 200, not 201: the spec names no status, and some clients check for 200.
"""
