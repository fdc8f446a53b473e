// Every user-visible string of the viewer, in Vietnamese (default) and English.
// Elements carry data-i18n (text), data-i18n-title (tooltip) or
// data-i18n-placeholder; applyTranslations() fills them in.

const STORAGE_KEY = 'minipacs.lang';
const LANGUAGES = ['vi', 'en'];

const STRINGS = {
  vi: {
    'app.title': 'minipacs – Xem ảnh',
    'lang.switch': 'English',
    'security.title': 'Bảo mật tài khoản',
    'security.link': 'Bảo mật',
    'security.totp': 'Xác thực hai lớp (mã 6 chữ số)',
    'security.off': 'Chưa bật xác thực hai lớp.',
    'security.mustEnrol': 'Tài khoản quản trị phải bật xác thực hai lớp trước khi dùng hệ thống.',
    'security.enabled': 'Xác thực hai lớp đang bật: mỗi lần đăng nhập cần mã từ ứng dụng.',
    'security.unknown': 'Không đọc được trạng thái xác thực hai lớp.',
    'security.start': 'Bật xác thực hai lớp',
    'security.scan': 'Quét mã QR bằng ứng dụng xác thực (Google Authenticator, FreeOTP, Microsoft Authenticator…), hoặc nhập khoá bí mật bên dưới.',
    'security.secret': 'Khoá bí mật:',
    'security.code': 'Mã 6 chữ số từ ứng dụng',
    'security.confirm': 'Xác nhận',
    'security.disable': 'Tắt xác thực hai lớp',
    'security.continue': 'Về trình xem ảnh',
    'security.wrongCode': 'Mã không đúng, đã hết hạn hoặc đã dùng rồi; nhập mã mới từ ứng dụng.',
    'security.adminKeeps': 'Tài khoản quản trị phải giữ xác thực hai lớp trên máy chủ này.',
    'security.signIn': 'Cần đăng nhập: mở trình xem (./), đăng nhập rồi quay lại trang này.',
    'audit.title': 'Nhật ký truy cập',
    'audit.patient': 'Mã bệnh nhân',
    'audit.actor': 'Người thực hiện',
    'audit.actor.hint': 'user:bs.lan, token:his, ae:CT1',
    'audit.action': 'Hành động',
    'audit.action.hint': 'view, query, download, login…',
    'audit.since': 'Từ',
    'audit.until': 'Đến',
    'audit.search': 'Tìm',
    'audit.csv': 'Tải CSV',
    'audit.count': '{n} sự kiện (mới nhất trước).',
    'audit.signIn': 'Cần đăng nhập: mở trình xem (./), đăng nhập bằng tài khoản kiểm toán rồi quay lại trang này.',
    'audit.forbidden': 'Tài khoản này không có quyền đọc nhật ký (cần vai trò kiểm toán hoặc quản trị).',
    'audit.col.at': 'Thời điểm',
    'audit.col.actor': 'Người/hệ thống',
    'audit.col.source': 'Địa chỉ',
    'audit.col.action': 'Hành động',
    'audit.col.patient': 'Bệnh nhân',
    'audit.col.study': 'Ca chụp',
    'audit.col.outcome': 'Kết quả',
    'audit.col.detail': 'Chi tiết',
    'lang.switch.title': 'Chuyển sang tiếng Anh',

    'search.title': 'Tìm ca chụp',
    'search.name': 'Họ tên bệnh nhân',
    'search.name.placeholder': 'vd: nguyen van an',
    'search.patientId': 'Mã BN / CCCD',
    'search.patientId.placeholder': 'Mã bệnh nhân hoặc số CCCD',
    'search.accession': 'Số phiếu chỉ định',
    'search.dateRange': 'Ngày chụp',
    'search.date.all': 'Tất cả',
    'search.date.today': 'Hôm nay',
    'search.date.7d': '7 ngày qua',
    'search.date.30d': '30 ngày qua',
    'search.date.custom': 'Chọn khoảng…',
    'search.dateFrom': 'Từ ngày',
    'search.dateTo': 'Đến ngày',
    'search.modality': 'Loại máy',
    'search.modality.all': 'Tất cả',
    'search.submit': 'Tìm kiếm',
    'search.clear': 'Xoá bộ lọc',
    'search.searching': 'Đang tìm…',
    'search.noResults': 'Không tìm thấy ca chụp nào.',
    'search.count': 'Kết quả {from}–{to}',
    'search.countMore': 'Kết quả {from}–{to} (còn nữa)',
    'search.countNone': '0 kết quả',
    'search.truncated': 'Máy chủ báo kết quả đã bị cắt bớt: {warning}',
    'search.prev': '‹ Trang trước',
    'search.next': 'Trang sau ›',
    'search.page': 'Trang {page}',
    'search.linked': 'Các ca chụp được yêu cầu từ EMR',
    'search.linkedNone': 'Không tìm thấy ca chụp nào theo liên kết.',

    'col.name': 'Họ tên',
    'col.patientId': 'Mã BN',
    'col.birthDate': 'Ngày sinh',
    'col.sex': 'Giới',
    'col.studyDate': 'Ngày chụp',
    'col.modality': 'Máy',
    'col.description': 'Mô tả',
    'col.accession': 'Số phiếu',
    'col.counts': 'Loạt/Ảnh',

    'sex.M': 'Nam',
    'sex.F': 'Nữ',
    'sex.O': 'Khác',
    'age.Y': '{n} tuổi',
    'age.M': '{n} tháng',
    'age.W': '{n} tuần',
    'age.D': '{n} ngày',

    'viewer.back': '‹ Danh sách',
    'viewer.back.title': 'Quay lại danh sách ca chụp',
    'viewer.series': 'Loạt ảnh',
    'viewer.image': '{n} ảnh',
    'viewer.images': '{n} ảnh',
    'viewer.frames': '{n} khung',
    'viewer.loadingStudy': 'Đang tải ca chụp…',
    'viewer.loading': 'Đang tải…',
    'viewer.loadProgress': 'Đã tải {loaded}/{total}',
    'viewer.empty': 'Kéo một loạt ảnh vào đây',
    'viewer.studyNotFound': 'Không tìm thấy ca chụp {uid}.',
    'viewer.noSeries': 'Ca chụp không có loạt ảnh nào.',
    'viewer.renderedFallback': 'ảnh do máy chủ dựng',
    'viewer.frameFailed': 'Không tải được ảnh',

    'tool.wl': 'Cửa sổ/Mức (W)',
    'tool.wl.label': 'W/L',
    'tool.zoom': 'Phóng to (Z)',
    'tool.zoom.label': 'Phóng',
    'tool.pan': 'Di chuyển (P)',
    'tool.pan.label': 'Dời',
    'tool.scroll': 'Cuộn ảnh (S)',
    'tool.scroll.label': 'Cuộn',
    'tool.length': 'Đo chiều dài (L)',
    'tool.length.label': 'Dài',
    'tool.angle': 'Đo góc (A)',
    'tool.angle.label': 'Góc',
    'tool.roiEllipse': 'Vùng đo hình elip (R)',
    'tool.roiEllipse.label': 'Elip',
    'tool.roiRect': 'Vùng đo hình chữ nhật (Shift+R)',
    'tool.roiRect.label': 'HCN',
    'action.presets': 'Cửa sổ mẫu',
    'action.presets.title': 'Cửa sổ mẫu cho CT (phím 1–6)',
    'action.presets.default': 'Mặc định (theo ảnh)',
    'preset.brain': 'Não',
    'preset.subdural': 'Máu tụ dưới màng cứng',
    'preset.lung': 'Phổi',
    'preset.mediastinum': 'Trung thất',
    'preset.abdomen': 'Bụng',
    'preset.bone': 'Xương',
    'action.invert': 'Đảo màu (I)',
    'action.invert.label': 'Đảo',
    'action.fit': 'Vừa khung (F)',
    'action.fit.label': 'Vừa',
    'action.oneToOne': 'Kích thước thật 1:1',
    'action.reset': 'Đặt lại (Backspace)',
    'action.reset.label': 'Đặt lại',
    'action.rotate': 'Xoay 90° (T)',
    'action.flipH': 'Lật ngang (H)',
    'action.flipV': 'Lật dọc (V)',
    'action.cine': 'Chạy/dừng cine (C)',
    'action.fps': 'Số khung/giây',
    'action.layout': 'Bố cục',
    'action.layout1x1': 'Bố cục 1×1',
    'action.layout1x2': 'Bố cục 1×2',
    'action.layout2x2': 'Bố cục 2×2',
    'action.clear': 'Xoá các phép đo trên ảnh',
    'action.clear.label': 'Xoá đo',
    'action.tags': 'Xem thẻ DICOM',
    'action.tags.label': 'Thẻ DICOM',
    'action.download': 'Tải ca chụp (ZIP)',
    'action.download.label': 'Tải ZIP',
    'action.export': 'Xuất ảnh đang xem (PNG)',
    'action.export.label': 'Xuất PNG',
    'action.help': 'Phím tắt (?)',

    'overlay.im': 'Ảnh: {n}/{total}',
    'overlay.series': 'Loạt: {n}',
    'overlay.slice': 'Vị trí: {loc} mm',
    'overlay.thickness': 'Dày: {t} mm',
    'overlay.wl': 'W: {w} L: {c}',
    'overlay.zoom': 'Phóng: {z}×',
    'overlay.value': 'Giá trị: {v}',
    'overlay.uncalibrated': 'Đo theo mặt phẳng đầu thu (chưa hiệu chỉnh)',
    'overlay.noSpacing': 'Không có khoảng cách điểm ảnh: đo bằng px',

    'overlay.magnified': 'Đo tại tâm quay (ImagerPixelSpacing ÷ ERMF)',
    'overlay.region': 'Đo theo vùng siêu âm (SequenceOfUltrasoundRegions)',
    'measure.source.patient': '(PixelSpacing)',
    'measure.source.magnified': '(ImagerPixelSpacing ÷ ERMF {f})',
    'measure.source.imager': '(ImagerPixelSpacing, mặt phẳng đầu thu, chưa hiệu chỉnh)',
    'measure.source.region': '(vùng siêu âm)',
    'measure.source.none': '(không có hiệu chỉnh)',
    'priors.title': 'Ca chụp trước',
    'priors.none': 'Không có ca chụp khác của bệnh nhân',
    'priors.lock': 'Khóa đồng bộ tại đây',
    'priors.lockTitle': 'Cuộn hai khung cùng nhau, giữ độ lệch giữa hai ảnh đang hiển thị',
    'measure.mean': 'TB',
    'measure.sd': 'ĐLC',
    'measure.area': 'DT',

    'tags.title': 'Thẻ DICOM của ảnh hiện tại',
    'tags.filter': 'Lọc theo thẻ, tên hoặc giá trị',
    'tags.tag': 'Thẻ',
    'tags.name': 'Tên',
    'tags.vr': 'VR',
    'tags.value': 'Giá trị',
    'tags.bulk': '(dữ liệu lớn)',
    'tags.none': 'Chưa có ảnh nào trong khung đang chọn.',
    'modal.close': 'Đóng (Esc)',

    'download.preparing': 'Đang tải ca chụp… {mb} MB',
    'download.zipping': 'Đang đóng gói ZIP…',
    'download.done': 'Đã tải xong {n} ảnh.',
    'download.failed': 'Tải ca chụp thất bại: {error}',

    'help.title': 'Phím tắt',
    'help.mouse': 'Chuột trái: công cụ đang chọn · Chuột giữa: di chuyển · Chuột phải: phóng to · Lăn chuột: cuộn ảnh · Ctrl+lăn: phóng to · Nhấp đúp: phóng to khung',
    'help.keys.tools': 'W cửa sổ/mức · Z phóng · P di chuyển · S cuộn · L đo dài · A đo góc · R vùng elip · Shift+R vùng chữ nhật',
    'help.keys.image': 'I đảo màu · F vừa khung · T xoay 90° · H lật ngang · V lật dọc · Backspace đặt lại · 1–6 cửa sổ mẫu CT',
    'help.keys.stack': '↑/↓ ảnh trước/sau · PageUp/PageDown 10 ảnh · Home/End ảnh đầu/cuối · C chạy cine',
    'help.keys.other': 'Esc huỷ đo/đóng hộp thoại · Delete xoá các phép đo · ? trợ giúp',

    'login.title': 'Đăng nhập',
    'login.user': 'Tên đăng nhập',
    'login.password': 'Mật khẩu',
    'login.submit': 'Đăng nhập',
    'login.sso': 'Đăng nhập bằng {name}',
    'login.busy': 'Đang đăng nhập…',
    'login.locked': 'Phiên làm việc đã bị khoá do không thao tác. Vui lòng đăng nhập lại.',
    'login.expired': 'Phiên làm việc đã hết hạn. Vui lòng đăng nhập lại.',
    'login.change.title': 'Đổi mật khẩu',
    'login.change.why': 'Đây là mật khẩu dùng một lần (hoặc đã quá hạn): hãy đặt mật khẩu mới để tiếp tục.',
    'login.change.old': 'Mật khẩu hiện tại',
    'login.change.new': 'Mật khẩu mới',
    'login.change.confirm': 'Nhập lại mật khẩu mới',
    'login.change.submit': 'Đổi mật khẩu',
    'login.change.mismatch': 'Hai lần nhập mật khẩu mới không giống nhau.',
    'login.change.rules': 'Đủ dài (thường ít nhất 10 ký tự), gồm ba trong bốn loại: chữ thường, chữ hoa, chữ số, ký tự khác; không chứa tên đăng nhập.',
    'login.logout': 'Đăng xuất',
    'login.logout.title': 'Đăng xuất khỏi minipacs',
    'login.unreachable': 'Không kết nối được máy chủ: {error}',
    'auth.wrong': 'Sai tên đăng nhập hoặc mật khẩu.',
    'auth.locked': 'Tài khoản {user} đang bị khoá đến {time} UTC do đăng nhập sai nhiều lần.',
    'auth.disabled': 'Tài khoản {user} đã bị vô hiệu hoá{reason}.',
    'auth.wrongCurrent': 'Mật khẩu hiện tại không đúng.',
    'auth.minLength': 'Mật khẩu cần ít nhất {n} ký tự.',
    'auth.breached': 'Mật khẩu này nằm trong danh sách mật khẩu đã bị lộ; hãy chọn mật khẩu khác.',
    'auth.hasUser': 'Mật khẩu không được chứa tên đăng nhập.',
    'auth.kinds': 'Mật khẩu cần ba trong bốn loại: chữ thường, chữ hoa, chữ số, ký tự khác.',
    'auth.history': 'Mật khẩu mới phải khác {n} mật khẩu gần nhất.',
    'auth.other': 'Máy chủ từ chối: {error}',
    'login.totp': 'Mã xác thực (6 chữ số)',
    'auth.totpNeeded': 'Tài khoản này cần mã xác thực 6 chữ số từ ứng dụng xác thực trên điện thoại.',
    'auth.totpWrong': 'Mã xác thực không đúng hoặc đã hết hạn.',
    'auth.totpUsed': 'Mã xác thực này đã được dùng; hãy chờ mã tiếp theo.',
    'share.title': 'Mở liên kết chia sẻ',
    'share.user': 'Liên kết chia sẻ',
    'share.why': 'Liên kết này được bảo vệ bằng mã PIN. Người gửi liên kết sẽ cho bạn mã PIN (ví dụ qua điện thoại).',
    'share.pin': 'Mã PIN',
    'share.submit': 'Mở ca chụp',
    'share.wrongPin': 'Mã PIN không đúng.',
    'share.invalid': 'Liên kết chia sẻ không hợp lệ, đã hết hạn hoặc đã bị thu hồi.',
    'role.admin': 'Quản trị',
    'role.radiologist': 'Bác sĩ CĐHA',
    'role.technologist': 'Kỹ thuật viên',
    'role.clinician': 'Bác sĩ lâm sàng',
    'role.emr': 'Hệ thống EMR',
    'role.research': 'Nghiên cứu',
    'role.auditor': 'Kiểm tra',
    'error.network': 'Lỗi kết nối máy chủ: {error}',
    'error.http': 'Máy chủ trả lỗi {status} cho {url}',
    'error.auth': 'Cần đăng nhập để xem ảnh (HTTP {status}).',
    'error.forbidden': 'Tài khoản {user} không có quyền làm việc này (HTTP 403).',
  },
  en: {
    'app.title': 'minipacs – Viewer',
    'lang.switch': 'Tiếng Việt',
    'security.title': 'Account security',
    'security.link': 'Security',
    'security.totp': 'Two-step sign-in (6-digit codes)',
    'security.off': 'Two-step sign-in is off.',
    'security.mustEnrol': 'Administrator accounts must turn on two-step sign-in before using the system.',
    'security.enabled': 'Two-step sign-in is on: every sign-in asks for a code from the app.',
    'security.unknown': 'The state of two-step sign-in could not be read.',
    'security.start': 'Turn on two-step sign-in',
    'security.scan': 'Scan the QR code with an authenticator app (Google Authenticator, FreeOTP, Microsoft Authenticator…), or type in the secret below.',
    'security.secret': 'Secret:',
    'security.code': '6-digit code from the app',
    'security.confirm': 'Confirm',
    'security.disable': 'Turn off two-step sign-in',
    'security.continue': 'Back to the viewer',
    'security.wrongCode': 'The code is wrong, expired or used already; type a new code from the app.',
    'security.adminKeeps': 'Administrator accounts must keep two-step sign-in on this server.',
    'security.signIn': 'Sign in first: open the viewer (./), sign in, then come back to this page.',
    'audit.title': 'Audit trail',
    'audit.patient': 'Patient ID',
    'audit.actor': 'Who',
    'audit.actor.hint': 'user:bs.lan, token:his, ae:CT1',
    'audit.action': 'Action',
    'audit.action.hint': 'view, query, download, login…',
    'audit.since': 'From',
    'audit.until': 'To',
    'audit.search': 'Search',
    'audit.csv': 'Download CSV',
    'audit.count': '{n} events (newest first).',
    'audit.signIn': 'Sign in first: open the viewer (./), sign in with an auditor account, then come back to this page.',
    'audit.forbidden': 'This account may not read the audit trail (it takes the auditor or admin role).',
    'audit.col.at': 'When',
    'audit.col.actor': 'Who',
    'audit.col.source': 'Address',
    'audit.col.action': 'Action',
    'audit.col.patient': 'Patient',
    'audit.col.study': 'Study',
    'audit.col.outcome': 'Outcome',
    'audit.col.detail': 'Detail',
    'lang.switch.title': 'Switch to Vietnamese',

    'search.title': 'Find studies',
    'search.name': 'Patient name',
    'search.name.placeholder': 'e.g. nguyen van an',
    'search.patientId': 'Patient ID / CCCD',
    'search.patientId.placeholder': 'Patient ID or citizen ID (CCCD)',
    'search.accession': 'Accession number',
    'search.dateRange': 'Study date',
    'search.date.all': 'Any date',
    'search.date.today': 'Today',
    'search.date.7d': 'Last 7 days',
    'search.date.30d': 'Last 30 days',
    'search.date.custom': 'Custom range…',
    'search.dateFrom': 'From',
    'search.dateTo': 'To',
    'search.modality': 'Modality',
    'search.modality.all': 'All',
    'search.submit': 'Search',
    'search.clear': 'Clear filters',
    'search.searching': 'Searching…',
    'search.noResults': 'No studies found.',
    'search.count': 'Results {from}–{to}',
    'search.countMore': 'Results {from}–{to} (more available)',
    'search.countNone': '0 results',
    'search.truncated': 'The server says the results were truncated: {warning}',
    'search.prev': '‹ Previous',
    'search.next': 'Next ›',
    'search.page': 'Page {page}',
    'search.linked': 'Studies requested by the EMR',
    'search.linkedNone': 'No study matches the link.',

    'col.name': 'Name',
    'col.patientId': 'Patient ID',
    'col.birthDate': 'Birth date',
    'col.sex': 'Sex',
    'col.studyDate': 'Study date',
    'col.modality': 'Modality',
    'col.description': 'Description',
    'col.accession': 'Accession',
    'col.counts': 'Series/Images',

    'sex.M': 'M',
    'sex.F': 'F',
    'sex.O': 'Other',
    'age.Y': '{n} y',
    'age.M': '{n} mo',
    'age.W': '{n} wk',
    'age.D': '{n} d',

    'viewer.back': '‹ Study list',
    'viewer.back.title': 'Back to the study list',
    'viewer.series': 'Series',
    'viewer.image': '{n} image',
    'viewer.images': '{n} images',
    'viewer.frames': '{n} frames',
    'viewer.loadingStudy': 'Loading study…',
    'viewer.loading': 'Loading…',
    'viewer.loadProgress': 'Loaded {loaded}/{total}',
    'viewer.empty': 'Drag a series here',
    'viewer.studyNotFound': 'Study {uid} was not found.',
    'viewer.noSeries': 'The study has no series.',
    'viewer.renderedFallback': 'server-rendered image',
    'viewer.frameFailed': 'Image could not be loaded',

    'tool.wl': 'Window/Level (W)',
    'tool.wl.label': 'W/L',
    'tool.zoom': 'Zoom (Z)',
    'tool.zoom.label': 'Zoom',
    'tool.pan': 'Pan (P)',
    'tool.pan.label': 'Pan',
    'tool.scroll': 'Scroll stack (S)',
    'tool.scroll.label': 'Scroll',
    'tool.length': 'Length (L)',
    'tool.length.label': 'Length',
    'tool.angle': 'Angle (A)',
    'tool.angle.label': 'Angle',
    'tool.roiEllipse': 'Elliptical ROI (R)',
    'tool.roiEllipse.label': 'Ellipse',
    'tool.roiRect': 'Rectangular ROI (Shift+R)',
    'tool.roiRect.label': 'Rect',
    'action.presets': 'Presets',
    'action.presets.title': 'CT window presets (keys 1–6)',
    'action.presets.default': 'Default (from image)',
    'preset.brain': 'Brain',
    'preset.subdural': 'Subdural',
    'preset.lung': 'Lung',
    'preset.mediastinum': 'Mediastinum',
    'preset.abdomen': 'Abdomen',
    'preset.bone': 'Bone',
    'action.invert': 'Invert (I)',
    'action.invert.label': 'Invert',
    'action.fit': 'Fit to window (F)',
    'action.fit.label': 'Fit',
    'action.oneToOne': 'Actual size 1:1',
    'action.reset': 'Reset (Backspace)',
    'action.reset.label': 'Reset',
    'action.rotate': 'Rotate 90° (T)',
    'action.flipH': 'Flip horizontal (H)',
    'action.flipV': 'Flip vertical (V)',
    'action.cine': 'Play/stop cine (C)',
    'action.fps': 'Frames per second',
    'action.layout': 'Layout',
    'action.layout1x1': 'Layout 1×1',
    'action.layout1x2': 'Layout 1×2',
    'action.layout2x2': 'Layout 2×2',
    'action.clear': 'Clear measurements on this image',
    'action.clear.label': 'Clear',
    'action.tags': 'DICOM tag browser',
    'action.tags.label': 'DICOM tags',
    'action.download': 'Download study (ZIP)',
    'action.download.label': 'Download ZIP',
    'action.export': 'Export viewport (PNG)',
    'action.export.label': 'Export PNG',
    'action.help': 'Keyboard shortcuts (?)',

    'overlay.im': 'Im: {n}/{total}',
    'overlay.series': 'Se: {n}',
    'overlay.slice': 'Loc: {loc} mm',
    'overlay.thickness': 'Thick: {t} mm',
    'overlay.wl': 'W: {w} L: {c}',
    'overlay.zoom': 'Zoom: {z}×',
    'overlay.value': 'Val: {v}',
    'overlay.uncalibrated': 'Measured in the imager plane (uncalibrated)',
    'overlay.noSpacing': 'No pixel spacing: measuring in px',

    'overlay.magnified': 'Measured at the isocentre (ImagerPixelSpacing ÷ ERMF)',
    'overlay.region': 'Measured with ultrasound regions (SequenceOfUltrasoundRegions)',
    'measure.source.patient': '(PixelSpacing)',
    'measure.source.magnified': '(ImagerPixelSpacing ÷ ERMF {f})',
    'measure.source.imager': '(ImagerPixelSpacing, imager plane, uncalibrated)',
    'measure.source.region': '(ultrasound region)',
    'measure.source.none': '(no calibration)',
    'priors.title': 'Priors',
    'priors.none': 'No other studies of this patient',
    'priors.lock': 'Lock sync here',
    'priors.lockTitle': 'Scroll both viewports together, keeping the offset between the two images shown now',
    'measure.mean': 'Mean',
    'measure.sd': 'SD',
    'measure.area': 'Area',

    'tags.title': 'DICOM tags of the current image',
    'tags.filter': 'Filter by tag, name or value',
    'tags.tag': 'Tag',
    'tags.name': 'Name',
    'tags.vr': 'VR',
    'tags.value': 'Value',
    'tags.bulk': '(bulk data)',
    'tags.none': 'No image in the active viewport.',
    'modal.close': 'Close (Esc)',

    'download.preparing': 'Downloading study… {mb} MB',
    'download.zipping': 'Building ZIP…',
    'download.done': 'Downloaded {n} images.',
    'download.failed': 'Study download failed: {error}',

    'help.title': 'Keyboard shortcuts',
    'help.mouse': 'Left mouse: active tool · Middle: pan · Right: zoom · Wheel: scroll stack · Ctrl+wheel: zoom · Double-click: maximise viewport',
    'help.keys.tools': 'W window/level · Z zoom · P pan · S scroll · L length · A angle · R elliptical ROI · Shift+R rectangular ROI',
    'help.keys.image': 'I invert · F fit · T rotate 90° · H flip horizontal · V flip vertical · Backspace reset · 1–6 CT presets',
    'help.keys.stack': '↑/↓ previous/next image · PageUp/PageDown 10 images · Home/End first/last · C cine',
    'help.keys.other': 'Esc cancel measurement/close dialog · Delete clear measurements · ? help',

    'login.title': 'Sign in',
    'login.user': 'User name',
    'login.password': 'Password',
    'login.submit': 'Sign in',
    'login.sso': 'Sign in with {name}',
    'login.busy': 'Signing in…',
    'login.locked': 'The session was locked after a period of inactivity. Please sign in again.',
    'login.expired': 'The session has ended. Please sign in again.',
    'login.change.title': 'Change password',
    'login.change.why': 'This is a one-time (or expired) password: set a new password to continue.',
    'login.change.old': 'Current password',
    'login.change.new': 'New password',
    'login.change.confirm': 'New password again',
    'login.change.submit': 'Change password',
    'login.change.mismatch': 'The two new passwords differ.',
    'login.change.rules': 'Long enough (usually at least 10 characters), three of: lower-case, upper-case, digits, other characters; not containing the user name.',
    'login.logout': 'Sign out',
    'login.logout.title': 'Sign out of minipacs',
    'login.unreachable': 'Cannot reach the server: {error}',
    'auth.wrong': 'Wrong user name or password.',
    'auth.locked': 'Account {user} is locked until {time} UTC after repeated failed sign-ins.',
    'auth.disabled': 'Account {user} is disabled{reason}.',
    'auth.wrongCurrent': 'The current password is wrong.',
    'auth.minLength': 'A password needs at least {n} characters.',
    'auth.breached': 'That password is in lists of breached passwords; choose another.',
    'auth.hasUser': 'A password must not contain the user name.',
    'auth.kinds': 'A password needs three of: lower-case letters, upper-case letters, digits, other characters.',
    'auth.history': 'The new password must differ from the last {n}.',
    'auth.other': 'The server refused: {error}',
    'login.totp': 'One-time code (6 digits)',
    'auth.totpNeeded': 'This account needs the 6-digit code from the authenticator app.',
    'auth.totpWrong': 'The one-time code is wrong or has expired.',
    'auth.totpUsed': 'This one-time code was already used; wait for the next one.',
    'share.title': 'Open a shared study',
    'share.user': 'Shared link',
    'share.why': 'This link is protected by a PIN. Whoever sent you the link gives you the PIN (by phone, for example).',
    'share.pin': 'PIN',
    'share.submit': 'Open the study',
    'share.wrongPin': 'Wrong PIN.',
    'share.invalid': 'This share link is not valid, has expired or was revoked.',
    'role.admin': 'Administrator',
    'role.radiologist': 'Radiologist',
    'role.technologist': 'Technologist',
    'role.clinician': 'Clinician',
    'role.emr': 'EMR system',
    'role.research': 'Research',
    'role.auditor': 'Auditor',
    'error.network': 'Cannot reach the server: {error}',
    'error.http': 'The server answered {status} for {url}',
    'error.auth': 'Sign-in required to view images (HTTP {status}).',
    'error.forbidden': 'Account {user} is not allowed to do this (HTTP 403).',
  },
};

let currentLang = readStoredLang();
const listeners = new Set();

function readStoredLang() {
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (LANGUAGES.includes(stored)) return stored;
  } catch {
    // localStorage can be unavailable (privacy mode); fall back to the default.
  }
  return 'vi';
}

export function getLang() {
  return currentLang;
}

/** Switch language, remember it, re-translate the document and notify listeners. */
export function setLang(lang) {
  if (!LANGUAGES.includes(lang)) throw new Error(`unknown language "${lang}"; use one of ${LANGUAGES.join(', ')}`);
  currentLang = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // Not remembered, but the switch still applies to this page.
  }
  if (typeof document !== 'undefined') applyTranslations(document);
  for (const listener of listeners) listener(lang);
}

export function otherLang() {
  return currentLang === 'vi' ? 'en' : 'vi';
}

export function onLangChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Translate `key`, replacing {name} placeholders with `params.name`. */
export function t(key, params = {}) {
  const text = STRINGS[currentLang][key] ?? STRINGS.vi[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in params ? String(params[name]) : match));
}

export function applyTranslations(root) {
  root.documentElement?.setAttribute('lang', currentLang);
  if (root.title !== undefined) root.title = t('app.title');
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
}

/** DICOM DA "YYYYMMDD" → "dd/mm/yyyy" (vi) or "yyyy-mm-dd" (en); other text is returned as is. */
export function formatDicomDate(da) {
  if (!da) return '';
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(String(da).trim());
  if (!m) return String(da);
  const [, y, mo, d] = m;
  return currentLang === 'vi' ? `${d}/${mo}/${y}` : `${y}-${mo}-${d}`;
}

/** DICOM TM "HHMMSS.frac" → "HH:MM". */
export function formatDicomTime(tm) {
  if (!tm) return '';
  const m = /^(\d{2})(\d{2})?(\d{2})?/.exec(String(tm).trim());
  if (!m) return String(tm);
  return `${m[1]}:${m[2] ?? '00'}`;
}

export function formatSex(code) {
  if (!code) return '';
  const key = `sex.${String(code).trim().toUpperCase()}`;
  const text = t(key);
  return text === key ? code : text;
}

/** DICOM AS "055Y" → "55 tuổi" / "55 y". */
export function formatAge(as) {
  const m = /^(\d{1,3})([DWMY])$/.exec(String(as ?? '').trim().toUpperCase());
  if (!m) return as ? String(as) : '';
  return t(`age.${m[2]}`, { n: Number(m[1]) });
}

/** Number formatting with the language's decimal separator. */
export function formatNumber(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return '';
  return Number(value).toLocaleString(currentLang === 'vi' ? 'vi-VN' : 'en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
    useGrouping: false,
  });
}
