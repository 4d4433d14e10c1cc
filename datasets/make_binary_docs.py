"""Regenerate the binary sample documents and the bad-file fixtures.

Everything here is fictional sample data for ragtune (CC0, see datasets/README.md).

Generated files (all committed, so nothing at runtime needs the generator libraries):

    datasets/sample/product_manual_k7.pdf       5-page PDF, one topic per page
    datasets/sample/travel_policy.docx          DOCX with headings, paragraphs, one table
    datasets/bad_files/corrupt.pdf              starts with %PDF- then garbage
    datasets/bad_files/empty.txt                zero bytes
    datasets/bad_files/not_really.pdf           plain text with a .pdf extension
    datasets/bad_files/encrypted_with_password.pdf      user password required
    datasets/bad_files/encrypted_no_user_password.pdf   owner password only, opens without one
    datasets/bad_files/malformed.jsonl          line 3 broken JSON, line 5 lacks "question"

Generation-only dependencies (install into the venv when you want to regenerate):

    pip install fpdf2 pypdf python-docx

Run from anywhere:

    python datasets/make_binary_docs.py

The output is deterministic: fixed dates, fixed PDF file identifiers, fixed zip
timestamps, so rerunning it gives byte-identical files.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample"
BAD = HERE / "bad_files"

FIXED_DATE = _dt.datetime(2025, 3, 3, 9, 0, 0, tzinfo=_dt.timezone.utc)
FIXED_ZIP_TIME = (2025, 3, 3, 9, 0, 0)

# Passwords of the encrypted fixtures (documented in datasets/README.md).
USER_PASSWORD = "lumora-user-2025"
OWNER_PASSWORD = "lumora-owner-2025"

# --------------------------------------------------------------------------
# K7 product manual (PDF). One dict per page; every page has its own heading
# and its own facts, so a gold answer can name the page.
# Text must stay within Latin-1 (core PDF fonts): no euro sign, no en dashes.
# --------------------------------------------------------------------------

MANUAL_TITLE = 'K7 "Pallet Pilot" Product Manual'
MANUAL_FOOTER = "Lumora Robotics - K7 Product Manual, revision C (March 2025)"

MANUAL_PAGES: list[dict] = [
    {
        "heading": "1. Overview and Specifications",
        "paragraphs": [
            'The K7 "Pallet Pilot" is an autonomous mobile robot that lifts and moves '
            "standard pallets (EUR pallets 1200 x 800 mm and ISO pallets 1200 x 1000 mm) "
            "between docks, storage lanes and production lines. It drives under the "
            "pallet, lifts it a few centimetres and carries it to its destination without "
            "fixed routes, floor tape or reflectors.",
            "This manual applies to all K7 robots with serial numbers starting with K7-24 "
            "or higher. Read the safety chapter on page 5 before operating the robot.",
        ],
        "table_title": "Technical specifications",
        "table_header": ("Property", "Value"),
        "table": [
            ("Maximum payload", "1,450 kg"),
            ("Top speed, unloaded", "2.3 m/s"),
            ("Top speed, loaded", "1.6 m/s"),
            ("Robot weight without load", "612 kg"),
            ("Dimensions (L x W x H)", "1,380 x 960 x 410 mm"),
            ("Lift height", "185 mm"),
            ("Lift time, full stroke", "4 seconds"),
            ("Positioning accuracy", "+/- 10 mm"),
            ("Sensors", "2 safety lidars, 1 3D camera"),
            ("Ingress protection", "IP54"),
            ("Noise level", "below 62 dB(A)"),
        ],
    },
    {
        "heading": "2. Battery and Charging",
        "paragraphs": [
            "The K7 uses a lithium iron phosphate (LFP) battery pack with a nominal "
            "voltage of 48 V and a capacity of 210 Ah. A battery management system "
            "reports cell temperatures and the state of charge to Lumora Orbit.",
        ],
        "table_title": "Battery data",
        "table_header": ("Battery property", "Value"),
        "table": [
            ("Runtime per charge", "up to 11.5 hours (typical duty cycle)"),
            ("Full charge, 0 to 100 percent", "95 minutes"),
            ("Opportunity charge, 20 to 80 percent", "38 minutes"),
            ("Rated cycle life", "4,200 full cycles"),
            ("Charging dock", "CD-40, 400 V / 16 A supply"),
            ("Automatic return to dock", "at 18 percent state of charge"),
        ],
        "after": [
            "The robot drives to the nearest free charging dock on its own. Short "
            "opportunity charges during breaks do not harm the battery and are the "
            "recommended way to run the K7 in multi-shift operation.",
            "Never use third-party chargers. Before storing a robot for more than four "
            "weeks, charge the battery to half capacity and disconnect it with the "
            "battery service switch behind the rear cover.",
        ],
    },
    {
        "heading": "3. Error Codes",
        "paragraphs": [
            "Active error codes are shown on the robot status display and on the robot "
            "detail page in Lumora Orbit. The first digit shows the subsystem: 1 energy, "
            "2 sensing, 3 drives, 4 communication, 5 safety, 6 lift.",
        ],
        "table_title": "Error code reference",
        "table_header": ("Code", "Meaning and action"), "col_widths": (15, 85),
        "table": [
            ("E-117", "Battery cell temperature above 58 \u00b0C. The robot parks; let it cool down for at least 45 minutes."),
            ("E-214", "Lidar occlusion: a safety lidar window is blocked or dirty. Clean the window and remove objects near the sensor."),
            ("E-231", "3D camera not responding. Restart the robot; contact support if the error returns."),
            ("E-305", "Wheel motor overcurrent. Check the drive wheels for wrapped stretch film or debris."),
            ("E-402", "Connection to Orbit lost for more than 30 s. Check Wi-Fi coverage in this area."),
            ("E-509", "Emergency stop button pressed. Release the button, then confirm in Orbit."),
            ("E-611", "Fork load sensor mismatch. Re-seat the load and recalibrate the load sensors."),
        ],
        "after": [
            "If an error code is not listed here, note the code and the robot serial "
            "number and contact Lumora support.",
        ],
    },
    {
        "heading": "4. Maintenance Schedule",
        "paragraphs": [
            "Regular maintenance keeps the K7 safe and available. The operating hour "
            "counter is shown on the robot detail page in Orbit. Record every task in the "
            "service log of the robot and use original Lumora parts only.",
        ],
        "table_title": "Maintenance intervals",
        "table_header": ("Interval", "Task"), "col_widths": (30, 70),
        "table": [
            ("Every shift", "Check the emergency stop buttons and the bumper for damage."),
            ("Every 7 days", "Clean both lidar windows and the 3D camera lens with the cleaning kit."),
            ("Every 250 operating hours", "Inspect the drive wheel treads for cuts and wear."),
            ("Every 500 operating hours", "Grease the caster wheel bearings."),
            ("Every 3,000 operating hours", "Replace both drive wheels."),
            ("Once a year", "Full service by a Lumora-certified technician, including a brake test."),
        ],
        "after": [
            "Switch the robot off with the main switch and secure it with your personal "
            "padlock before any maintenance work.",
        ],
    },
    {
        "heading": "5. Safety",
        "paragraphs": [
            "The K7 is designed to work in areas shared with people. Its safety functions "
            "must never be bypassed, covered or modified.",
        ],
        "table_title": "Safety limits",
        "table_header": ("Safety item", "Limit"),
        "table": [
            ("Emergency stop buttons", "4, one at each corner of the robot"),
            ("Protective field at top speed", "up to 1.2 m in front of the robot"),
            ("Speed limit in shared zones", "0.6 m/s"),
            ("Maximum ramp gradient", "4 percent, loaded or unloaded"),
            ("Operating temperature", "+5 \u00b0C to +40 \u00b0C"),
        ],
        "after": [
            "Shared zones are areas in which people and robots work side by side; they are "
            "marked on the site map in Orbit.",
            "Never ride on the robot, never stand between the robot and a pallet, and never "
            "place objects on the robot while it is driving. Only operators who completed "
            "Lumora operator training may start, stop or move the robot manually.",
        ],
    },
]


def build_manual_pdf(path: Path) -> None:
    from fpdf import FPDF

    total = len(MANUAL_PAGES)

    class ManualPDF(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", "", 9)
            self.set_text_color(90, 90, 90)
            self.cell(0, 6, f"Lumora Robotics | {MANUAL_TITLE}", new_x="LMARGIN", new_y="NEXT")
            self.ln(4)

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", "", 9)
            self.set_text_color(90, 90, 90)
            self.cell(0, 8, f"{MANUAL_FOOTER} - Page {self.page_no()} of {total}", align="C")

    pdf = ManualPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(MANUAL_TITLE)
    pdf.set_author("Lumora Robotics (fictional)")
    pdf.set_subject("Sample document for ragtune")
    pdf.set_creator("datasets/make_binary_docs.py")
    pdf.set_producer("fpdf2")
    pdf.set_auto_page_break(auto=True, margin=20)

    for page in MANUAL_PAGES:
        pdf.add_page()
        pdf.set_text_color(0, 0, 0)
        pdf.set_font("Helvetica", "B", 18)
        pdf.cell(0, 10, page["heading"], new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font("Helvetica", "", 11)
        for para in page["paragraphs"]:
            pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 13)
        pdf.cell(0, 8, page["table_title"], new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10.5)
        with pdf.table(
            col_widths=page.get("col_widths", (35, 65)), text_align="LEFT", line_height=6
        ) as table:
            for left, right in [page["table_header"], *page["table"]]:
                row = table.row()
                row.cell(left)
                row.cell(right)
        pdf.ln(4)
        pdf.set_font("Helvetica", "", 11)
        for para in page.get("after", []):
            pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)

    # fpdf2 derives the file /ID from the content and the creation date, so a
    # fixed creation date gives a byte-identical file.
    pdf.output(str(path))
    if pdf.page_no() != total:
        raise SystemExit(f"manual overflowed: {pdf.page_no()} pages, expected {total}")


# --------------------------------------------------------------------------
# Travel policy (DOCX)
# --------------------------------------------------------------------------

TRAVEL_TITLE = "Lumora Robotics Travel Policy"

TRAVEL_SECTIONS: list[tuple[str, list[str]]] = [
    (
        "Document information",
        [
            "Policy TP-2025-02, effective 1 February 2025. Owner: Finance department. "
            "This policy replaces the travel policy of 2022.",
        ],
    ),
    (
        "1. Scope",
        [
            "This policy applies to all business travel by Lumora Robotics employees, "
            "including customer site visits, trade fairs, training and travel between "
            "the Tessaport head office, the Vell Harbour assembly plant and the "
            "Brannock test hall. Costs are only reimbursed when this policy is followed.",
        ],
    ),
    (
        "2. Booking rules",
        [
            "* All business trips are booked through the WayPoint travel portal at least "
            "14 days in advance. Trips booked at shorter notice need approval from your manager.",
            "* If the destination can be reached by train in under 3.5 hours, you travel by train.",
            "* Flights shorter than 6 hours are booked in economy class. For flights of "
            "6 hours or longer, premium economy may be booked.",
            "* Business class is only allowed for flights longer than 10 hours and needs "
            "written approval from a Vice President.",
            "* Hotel costs may not exceed EUR 180 per night in Europe or USD 240 per night "
            "in North America. For stays of more than 10 nights, book a serviced apartment "
            "through WayPoint instead.",
            "* Loyalty points collected on business trips may be kept, but must never "
            "influence the choice of airline or hotel.",
        ],
    ),
    (
        "3. Per-diem rates",
        [
            "The per diem covers meals, drinks and small local expenses such as tips. It "
            "is paid per full travel day at the rate of the city where you stay overnight. "
            "On the day of departure and the day of return, 70 percent of the rate is paid. "
            "When a customer or conference provides lunch, the per diem for that day is "
            "reduced by a third.",
        ],
    ),
    # The per-diem table is inserted right after section 3 (see build_travel_docx).
    (
        "4. Ground transport",
        [
            "Use public transport where practical. Taxis and ride-hailing are reimbursed "
            "when no reasonable public transport is available, or late at night.",
            "If you use your own car for business travel, the mileage allowance is EUR 0.32 "
            "per kilometre. Parking and tolls are reimbursed on top.",
            "Rental cars are booked in the compact class. A larger car may be booked when "
            "three or more colleagues travel together or when you transport equipment.",
        ],
    ),
    (
        "5. Expense claims",
        [
            "Submit your travel expense claim in the Spendly app no later than 30 days "
            "after you return, with photos of all receipts. Per diems do not need receipts.",
            "Claims submitted later than that are only paid with approval from the "
            "Finance department.",
        ],
    ),
    (
        "6. Travel safety and insurance",
        [
            "Every business trip is covered by the company travel insurance from Meridian "
            "Assist. Their 24-hour assistance line for travelling employees is "
            "+1 (555) 014-9020.",
            "Trips to countries with an elevated travel warning need prior approval from "
            "the security team. Always register the trip in WayPoint, so that the company "
            "can reach you in an emergency.",
        ],
    ),
]

PER_DIEM_HEADER = ("City", "Country", "Daily per-diem rate")
PER_DIEM_ROWS = [
    ("Munich", "Germany", "EUR 62"),
    ("Rotterdam", "Netherlands", "EUR 58"),
    ("Lyon", "France", "EUR 55"),
    ("Chicago", "United States", "USD 74"),
    ("Singapore", "Singapore", "SGD 95"),
    ("Tokyo", "Japan", "JPY 9,800"),
    ("All other cities", "-", "EUR 50"),
]


def _normalize_zip(path: Path) -> None:
    """Rewrite a zip container with fixed timestamps so the DOCX is reproducible."""
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info, data in items:
            new = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            new.compress_type = zipfile.ZIP_DEFLATED
            new.external_attr = 0o644 << 16
            zout.writestr(new, data)
    path.write_bytes(buf.getvalue())


def build_travel_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    props = document.core_properties
    props.title = TRAVEL_TITLE
    props.author = "Lumora Robotics (fictional)"
    props.last_modified_by = "datasets/make_binary_docs.py"
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1

    document.add_heading(TRAVEL_TITLE, level=0)
    for heading, paragraphs in TRAVEL_SECTIONS:
        document.add_heading(heading, level=1)
        for text in paragraphs:
            if text.startswith("* "):
                document.add_paragraph(text[2:], style="List Bullet")
            else:
                document.add_paragraph(text)
        if heading.startswith("3."):
            table = document.add_table(rows=1, cols=len(PER_DIEM_HEADER))
            table.style = "Table Grid"
            for cell, text in zip(table.rows[0].cells, PER_DIEM_HEADER):
                cell.text = text
                for run in cell.paragraphs[0].runs:
                    run.bold = True
            for row in PER_DIEM_ROWS:
                cells = table.add_row().cells
                for cell, text in zip(cells, row):
                    cell.text = text
            document.add_paragraph(
                "Rates for cities that are not listed can be requested from the Finance department."
            )
    document.save(str(path))
    _normalize_zip(path)


# --------------------------------------------------------------------------
# Bad files for error-handling tests
# --------------------------------------------------------------------------

def _small_pdf_bytes(lines: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_producer("fpdf2")
    pdf.add_page()
    pdf.set_font("Helvetica", "", 12)
    for line in lines:
        pdf.multi_cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _encrypt(pdf_bytes: bytes, user_password: str, owner_password: str, file_id: bytes) -> bytes:
    from pypdf import PdfReader, PdfWriter
    from pypdf.constants import UserAccessPermissions as Perm
    from pypdf.generic import ArrayObject, ByteStringObject

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes)))
    writer.add_metadata({"/Producer": "pypdf", "/Title": "Encrypted test fixture"})
    fid = ByteStringObject(file_id)
    writer._ID = ArrayObject((fid, fid))  # fixed identifier: reproducible output
    # RC4-128 needs no optional crypto dependency and, unlike AES, has no random IV.
    writer.encrypt(
        user_password=user_password,
        owner_password=owner_password,
        algorithm="RC4-128",
        # The owner-only file is the classic "protected" PDF: it opens and its text can be
        # extracted, but editing, annotating and re-assembling are not permitted.
        permissions_flag=Perm.all() if user_password else (
            Perm.all() & ~Perm.MODIFY & ~Perm.ADD_OR_MODIFY & ~Perm.FILL_FORM_FIELDS & ~Perm.ASSEMBLE_DOC
        ),
    )
    writer._ID = ArrayObject((fid, fid))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


MALFORMED_JSONL_LINES = [
    json.dumps({"question": "How many vacation days do Lumora employees get per year?",
                "answer": "Employees get 27 vacation days per year.",
                "doc": "employee_handbook.md"}),
    json.dumps({"question": "What does error code E-214 mean on the K7?",
                "answer": "E-214 means lidar occlusion.",
                "doc": "product_manual_k7.pdf", "page": 3}),
    '{"question": "What is the K7 top speed?", "answer": "2.3 m/s", "doc": "product_manual_k7.pdf", "page": 1',
    json.dumps({"question": "How long is the standard K7 warranty?",
                "answer": "The standard warranty is 24 months.",
                "doc": "warranty_and_support.txt"}),
    json.dumps({"answer": "Passwords must be at least 14 characters long.",
                "doc": "security_policy.html"}),
    json.dumps({"question": "What is the per diem in Rotterdam?",
                "answer": "The per diem in Rotterdam is EUR 58.",
                "doc": "travel_policy.docx"}),
]


def build_bad_files() -> None:
    BAD.mkdir(parents=True, exist_ok=True)

    # Looks like a PDF for the first bytes, then deterministic garbage.
    garbage = bytes((i * 73 + 41) % 256 for i in range(2048))
    (BAD / "corrupt.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + garbage + b"\n%%EOF-not-really\n")

    (BAD / "empty.txt").write_bytes(b"")

    (BAD / "not_really.pdf").write_text(
        "This is a plain text file that only pretends to be a PDF.\n"
        "It has a .pdf extension but no PDF header, objects or cross-reference table.\n",
        encoding="utf-8",
    )

    secret = _small_pdf_bytes([
        "Lumora Robotics - encrypted test fixture.",
        "This page is only readable with the user password.",
    ])
    (BAD / "encrypted_with_password.pdf").write_bytes(
        _encrypt(secret, USER_PASSWORD, OWNER_PASSWORD, b"lumora-fixture-1")
    )

    open_doc = _small_pdf_bytes([
        "Lumora Robotics - owner-password test fixture.",
        "This PDF is encrypted with an owner password only, so it opens without a password.",
    ])
    (BAD / "encrypted_no_user_password.pdf").write_bytes(
        _encrypt(open_doc, "", OWNER_PASSWORD, b"lumora-fixture-2")
    )

    (BAD / "malformed.jsonl").write_text("\n".join(MALFORMED_JSONL_LINES) + "\n", encoding="utf-8")


def main() -> None:
    SAMPLE.mkdir(parents=True, exist_ok=True)
    build_manual_pdf(SAMPLE / "product_manual_k7.pdf")
    build_travel_docx(SAMPLE / "travel_policy.docx")
    build_bad_files()
    for p in sorted([*SAMPLE.glob("*.pdf"), *SAMPLE.glob("*.docx"), *BAD.iterdir()]):
        print(f"{p.relative_to(HERE.parent)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
