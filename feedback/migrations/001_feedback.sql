-- Feedback (phản ánh hiện trường): categories, reports, their timeline, photos, followers, answer templates.

-- Lowercase without Vietnamese diacritics ("Đường hỏng" -> "duong hong"), so search works typed either way.
-- translate() rather than lower(): lower() of non-ASCII letters depends on the database's ctype (C in the
-- embedded server), and unaccent is a contrib extension we do not have.
CREATE FUNCTION feedback_fold(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN translate(t, 'ÀÁÂÃÈÉÊÌÍÎÒÓÔÕÙÚÛÝàáâãèéêìíîòóôõùúûýĂăĐđĔĕĨĩĬĭŎŏŨũŬŭŶŷƠơƯưṌṍṸṹẠạẢảẤấẦầẨẩẪẫẬậẮắẰằẲẳẴẵẶặẸẹẺẻẼẽẾếỀềỂểỄễỆệỈỉỊịỌọỎỏỐốỒồỔổỖỗỘộỚớỜờỞởỠỡỢợỤụỦủỨứỪừỬửỮữỰựỲỳỴỵỶỷỸỹABCDEFGHIJKLMNOPQRSTUVWXYZ', 'aaaaeeeiiioooouuuyaaaaeeeiiioooouuuyaaddeeiiiioouuuuyyoouuoouuaaaaaaaaaaaaaaaaaaaaaaaaeeeeeeeeeeeeeeeeiiiioooooooooooooooooooooooouuuuuuuuuuuuuuyyyyyyyyabcdefghijklmnopqrstuvwxyz');

-- Hanoi in metres on a local equirectangular projection centred on Hoàn Kiếm (21.0285 N, 105.8542 E): the
-- built-in point type and its GiST index then answer "within 100 m" and map boxes in metres. Over the city's
-- extent (about 1 degree) the scale error stays under 1 %, i.e. under a metre at 100 m.
CREATE FUNCTION feedback_metres(lat double precision, lng double precision) RETURNS point
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN point((lng - 105.8542) * 103873.0, (lat - 21.0285) * 110748.0);

CREATE TABLE feedback_category (
    code          text     PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9-]{1,40}$'),
    name_vi       text     NOT NULL,
    name_en       text     NOT NULL,
    description_vi text    NOT NULL DEFAULT '',
    description_en text    NOT NULL DEFAULT '',
    keywords      text     NOT NULL DEFAULT '',
    -- a unit code from the units directory, or 'ward': the ward or commune the report is in
    default_unit  text     NOT NULL,
    urgency       text     NOT NULL CHECK (urgency IN ('normal', 'complex', 'urgent')),
    sort_order    smallint NOT NULL DEFAULT 0,
    active        boolean  NOT NULL DEFAULT true
);

-- Deadlines in working hours by urgency (QĐ 1207/QĐ-UBND: receipt within 8 working hours, urgent handled
-- within 4). Normal and complex answer times are the city's to set; these are the defaults.
CREATE TABLE feedback_deadline (
    urgency       text     PRIMARY KEY CHECK (urgency IN ('normal', 'complex', 'urgent')),
    receive_hours smallint NOT NULL CHECK (receive_hours > 0),
    answer_hours  smallint NOT NULL CHECK (answer_hours >= receive_hours)
);
INSERT INTO feedback_deadline VALUES ('normal', 8, 40), ('complex', 8, 80), ('urgent', 4, 4);

INSERT INTO feedback_category (code, name_vi, name_en, keywords, default_unit, urgency, sort_order) VALUES
 ('ha-tang-giao-thong', 'Hạ tầng giao thông', 'Road infrastructure', 'ổ gà, đường hỏng, vỉa hè, cầu, đèn tín hiệu', 'so-xay-dung', 'normal', 10),
 ('trat-tu-giao-thong', 'Trật tự an toàn giao thông', 'Traffic order and safety', 'ùn tắc, đỗ xe sai, lấn làn', 'ward', 'normal', 20),
 ('ve-sinh-moi-truong', 'Vệ sinh môi trường', 'Environment and sanitation', 'rác thải, ô nhiễm, tiếng ồn, nước thải', 'ward', 'normal', 30),
 ('trat-tu-do-thi', 'Trật tự đô thị', 'Urban order', 'lấn chiếm vỉa hè, biển quảng cáo, hàng rong', 'ward', 'normal', 40),
 ('trat-tu-xay-dung', 'Trật tự xây dựng', 'Construction order', 'xây dựng trái phép, công trình không phép', 'ward', 'complex', 50),
 ('dien-chieu-sang', 'Điện, chiếu sáng công cộng', 'Electricity and street lighting', 'mất điện, đèn đường, dây điện', 'so-cong-thuong', 'normal', 60),
 ('cap-thoat-nuoc', 'Cấp thoát nước, ngập úng', 'Water supply, drainage and flooding', 'mất nước, ngập, cống, nắp cống', 'so-xay-dung', 'normal', 70),
 ('cay-xanh', 'Cây xanh', 'Trees and green spaces', 'cây đổ, cành gãy, cắt tỉa', 'ward', 'urgent', 80),
 ('an-ninh-trat-tu', 'An ninh trật tự', 'Security and public order', 'gây rối, trộm cắp, tụ tập', 'cong-an-thanh-pho', 'urgent', 90),
 ('an-toan-thuc-pham', 'Y tế, an toàn thực phẩm', 'Health and food safety', 'ngộ độc, thực phẩm bẩn, dịch bệnh', 'so-y-te', 'normal', 100),
 ('dat-dai', 'Đất đai', 'Land', 'lấn chiếm đất, tranh chấp ranh giới', 'so-nong-nghiep-moi-truong', 'complex', 110),
 ('dich-vu-cong', 'Dịch vụ công', 'Public services', 'thủ tục, một cửa, thái độ phục vụ', 'van-phong-ubnd', 'normal', 120),
 ('khac', 'Lĩnh vực khác', 'Other', '', 'ward', 'normal', 990);

CREATE TABLE report (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reporter_id      uuid        NOT NULL REFERENCES resident (id),
    idempotency_key  text        NOT NULL,
    -- the name as signed in (VNeID) when the report was sent; never shown publicly when hide_name
    reporter_name    text,
    hide_name        boolean     NOT NULL DEFAULT false,
    visibility       text        NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    source           text        NOT NULL DEFAULT 'app',    -- 'app', 'demo' or 'open311:<client name>'
    category_code    text        NOT NULL REFERENCES feedback_category (code),
    urgency          text        NOT NULL CHECK (urgency IN ('normal', 'complex', 'urgent')),
    description      text        NOT NULL CHECK (length(description) BETWEEN 1 AND 4000),
    latitude         double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude        double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    location         point       GENERATED ALWAYS AS (feedback_metres(latitude, longitude)) STORED,
    address          text        NOT NULL DEFAULT '',
    ward_code        text        NOT NULL,
    unit_code        text        NOT NULL,     -- the unit responsible now (changes on transfer)
    status           text        NOT NULL DEFAULT 'submitted'
                     CHECK (status IN ('submitted', 'received', 'in_progress', 'answered', 'closed', 'rejected')),
    assignee_id      uuid        REFERENCES resident (id),
    duplicate_of     bigint      REFERENCES report (id),
    submitted_at     timestamptz NOT NULL,
    routed_at        timestamptz NOT NULL,     -- when the current unit got it (submit or last transfer)
    received_at      timestamptz,
    receive_due_at   timestamptz NOT NULL,
    answer_due_at    timestamptz NOT NULL,
    answered_at      timestamptz,
    answered_on_time boolean,
    answer_text      text,
    closed_at        timestamptz,
    close_reason     text,                     -- accepted, rated, expired, duplicate, rejected
    updated_at       timestamptz NOT NULL,
    escalation_level smallint    NOT NULL DEFAULT 0,  -- 1: receipt overdue escalated, 2: answer overdue escalated
    reopen_count     smallint    NOT NULL DEFAULT 0,
    rating           smallint    CHECK (rating BETWEEN 1 AND 5),
    rating_comment   text,
    rated_at         timestamptz,
    follower_count   integer     NOT NULL DEFAULT 0,
    search           tsvector    GENERATED ALWAYS AS (
                         to_tsvector('simple', feedback_fold(description || ' ' || address))) STORED,
    UNIQUE (reporter_id, idempotency_key),
    CHECK (duplicate_of IS NULL OR duplicate_of <> id)
);
-- the public map and list: newest first, in a box. The box's index also holds the sort key and what a map filters
-- on, so that the newest reports in a box are picked from the index alone (list_reports reads the table for the
-- page's rows only).
CREATE INDEX report_public_location_idx ON report USING gist (location)
    INCLUDE (submitted_at, id, category_code, status) WHERE visibility = 'public';
CREATE INDEX report_public_recent_idx ON report (submitted_at DESC, id DESC) WHERE visibility = 'public';
CREATE INDEX report_category_recent_idx ON report (category_code, submitted_at DESC, id DESC)
    WHERE visibility = 'public';
-- duplicate suggestions: open reports nearby
CREATE INDEX report_open_location_idx ON report USING gist (location)
    WHERE status IN ('submitted', 'received', 'in_progress');
-- a unit's queue, by deadline: its open reports (the default view) in order, without sorting them all; one status
-- at a time otherwise. Then newest first, and the overdue scan of the escalation job.
CREATE INDEX report_open_queue_idx ON report (unit_code, answer_due_at, id)
    WHERE status IN ('submitted', 'received', 'in_progress');
CREATE INDEX report_queue_idx ON report (unit_code, status, answer_due_at);
CREATE INDEX report_unit_recent_idx ON report (unit_code, submitted_at DESC, id DESC);
CREATE INDEX report_overdue_idx ON report (answer_due_at)
    WHERE status IN ('submitted', 'received', 'in_progress') AND escalation_level < 2;
CREATE INDEX report_reporter_idx ON report (reporter_id, submitted_at DESC, id DESC);
CREATE INDEX report_answered_idx ON report (answered_at) WHERE status = 'answered';
CREATE INDEX report_search_idx ON report USING gin (search);

-- Every step and who took it. public = false for what residents never see (internal notes, assignment,
-- escalation); the public timeline and the reporter's view read public rows only.
CREATE TABLE report_event (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    report_id   bigint      NOT NULL REFERENCES report (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('submitted', 'received', 'assigned', 'started', 'answered',
                            'closed', 'rejected', 'transferred', 'reopened', 'rated', 'escalated', 'merged',
                            'note', 'urgency_changed')),
    public      boolean     NOT NULL,
    actor_id    uuid        REFERENCES resident (id),   -- null: the system (a worker job)
    actor_role  text        NOT NULL CHECK (actor_role IN ('reporter', 'staff', 'system')),
    actor_unit  text,
    from_status text,
    to_status   text,
    message     text,
    data        jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX report_event_report_idx ON report_event (report_id, id);

-- Photos: uploaded first (report_id null), attached when the report or answer is sent; unattached ones are
-- deleted after a day. Kept in PostgreSQL so every API process serves them without shared disks.
CREATE TABLE report_photo (
    id           uuid        PRIMARY KEY,
    owner_id     uuid        NOT NULL REFERENCES resident (id),
    report_id    bigint      REFERENCES report (id) ON DELETE CASCADE,
    event_id     bigint      REFERENCES report_event (id) ON DELETE CASCADE,
    position     smallint,
    public       boolean     NOT NULL DEFAULT true,
    content_type text        NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png')),
    width        integer     NOT NULL,
    height       integer     NOT NULL,
    byte_size    integer     NOT NULL,
    sha256       text        NOT NULL,
    data         bytea       NOT NULL,
    thumbnail    bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_photo_report_idx ON report_photo (report_id, position) WHERE report_id IS NOT NULL;
CREATE INDEX report_photo_unattached_idx ON report_photo (created_at) WHERE report_id IS NULL;

CREATE TABLE report_follower (
    report_id   bigint      NOT NULL REFERENCES report (id) ON DELETE CASCADE,
    resident_id uuid        NOT NULL REFERENCES resident (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, resident_id)
);
CREATE INDEX report_follower_resident_idx ON report_follower (resident_id, created_at DESC);

-- Answer templates staff pick from ({placeholders} filled in by the clerk); unit_code null: every unit.
CREATE TABLE answer_template (
    code      text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9-]{1,40}$'),
    unit_code text,
    kind      text NOT NULL CHECK (kind IN ('answer', 'reject')),
    title     text NOT NULL,
    body      text NOT NULL
);
INSERT INTO answer_template (code, kind, title, body) VALUES
 ('da-khac-phuc', 'answer', 'Đã khắc phục',
  'Cảm ơn Ông/Bà đã phản ánh. {unit} đã kiểm tra hiện trường và khắc phục xong ngày {date}. {details}'),
 ('da-xu-ly-vi-pham', 'answer', 'Đã xử lý vi phạm',
  'Cảm ơn Ông/Bà đã phản ánh. {unit} đã kiểm tra, lập biên bản và xử lý vi phạm theo quy định. {details}'),
 ('dang-len-ke-hoach', 'answer', 'Đã đưa vào kế hoạch',
  'Cảm ơn Ông/Bà đã phản ánh. Nội dung đã được {unit} đưa vào kế hoạch sửa chữa, dự kiến hoàn thành {date}.'),
 ('khong-thuoc-tham-quyen', 'reject', 'Không thuộc phạm vi tiếp nhận',
  'Nội dung phản ánh không thuộc phạm vi tiếp nhận của hệ thống (khiếu nại, tố cáo hoặc tranh chấp dân sự). Đề nghị Ông/Bà liên hệ {details}.'),
 ('thieu-thong-tin', 'reject', 'Thiếu thông tin',
  'Phản ánh chưa đủ thông tin (vị trí, hình ảnh) để xác minh. Đề nghị Ông/Bà gửi lại phản ánh với {details}.');
