// Messages of the 车辆档案 and 驾驶员档案 views (records issue), merged into the one i18n
// instance when a view is loaded. Chinese first; English has the same keys (the type says so).
import { i18n } from "@/i18n";

export const zhRecords = {
  rec: {
    search: "车牌号、编号或姓名",
    status: "状态",
    any: "全部",
    create: "登记车辆",
    createDriver: "新增驾驶员",
    edit: "编辑",
    view: "档案",
    dispose: "移交处置",
    disposeConfirm: "将 {plate} 移交处置？处置后不再计入实有数，也不再要求上线。",
    import: "导入 Excel/CSV",
    exportXlsx: "导出 Excel",
    exportCsv: "导出 CSV",
    save: "保存",
    cancel: "取消",
    saved: "已保存",
    failed: "操作失败：{e}",
    overQuota: "超出编制：{e}",
    imported: "导入完成：新增 {c} 条，更新 {u} 条，错误 {n} 条",
    importErrors: "以下行未导入",
    line: "行",
    reason: "原因",
    details: "基本信息",
    history: "变更记录",
    track: "今日轨迹",
    alarms: "今日报警",
    openPlayback: "在轨迹回放中查看",
    noAlarms: "今日无报警",
    when: "时间",
    who: "操作人",
    action: "操作",
    changes: "变更内容",
    total: "共 {n} 条",
    required: "{f}不能为空",
    badPlate: "车牌号格式不对，例如 川X12345",
    badTerminal: "终端手机号只能是数字，最多 20 位",
    badVin: "车辆识别代号应为 17 位字母或数字（不含 I、O、Q）",
    badPhone: "手机号应为 11 位数字，以 1 开头",
    badLicence: "驾驶证号应为 12 到 18 位数字或字母",
    badId: "编号只能用字母、数字和 ._~:-",
  },
  recf: {
    id: "车辆编号",
    plate: "车牌号",
    org: "所属单位",
    vehicle_class: "编制类别",
    terminal: "终端手机号",
    status: "状态",
    vin: "车辆识别代号",
    engine_no: "发动机号",
    brand: "品牌",
    model: "型号",
    energy: "能源类型",
    seats: "核定座位数",
    colour: "车身颜色",
    purchase_date: "购置日期",
    insurance_due: "保险到期日",
    inspection_due: "年检到期日",
    speed_limit_kmh: "限速（km/h）",
    fuel_card: "加油卡号",
    driver_id: "驾驶员编号",
    name: "姓名",
    phone: "手机号",
    licence_no: "驾驶证号",
    licence_class: "准驾车型",
    licence_expiry: "驾驶证有效期至",
  },
};

export const enRecords: typeof zhRecords = {
  rec: {
    search: "Plate, id or name",
    status: "Status",
    any: "All",
    create: "Register vehicle",
    createDriver: "Add driver",
    edit: "Edit",
    view: "Record",
    dispose: "Hand over for disposal",
    disposeConfirm: "Hand {plate} over for disposal? It stops counting against the quota and is no longer expected to report.",
    import: "Import Excel/CSV",
    exportXlsx: "Export Excel",
    exportCsv: "Export CSV",
    save: "Save",
    cancel: "Cancel",
    saved: "Saved",
    failed: "Failed: {e}",
    overQuota: "Over the quota: {e}",
    imported: "Imported: {c} new, {u} updated, {n} errors",
    importErrors: "Rows not imported",
    line: "Line",
    reason: "Reason",
    details: "Details",
    history: "Changes",
    track: "Today's track",
    alarms: "Today's alarms",
    openPlayback: "Open in playback",
    noAlarms: "No alarm today",
    when: "When",
    who: "By",
    action: "Action",
    changes: "Changes",
    total: "{n} in all",
    required: "{f} is required",
    badPlate: "Plate format is wrong, e.g. 川X12345",
    badTerminal: "Terminal phone: digits only, at most 20",
    badVin: "VIN: 17 letters or digits (no I, O or Q)",
    badPhone: "Phone: 11 digits starting with 1",
    badLicence: "Licence number: 12 to 18 digits or letters",
    badId: "Id: letters, digits and ._~:- only",
  },
  recf: {
    id: "Vehicle id",
    plate: "Plate",
    org: "Organisation",
    vehicle_class: "Class (quota)",
    terminal: "Terminal phone",
    status: "Status",
    vin: "VIN",
    engine_no: "Engine number",
    brand: "Brand",
    model: "Model",
    energy: "Energy",
    seats: "Seats",
    colour: "Colour",
    purchase_date: "Purchase date",
    insurance_due: "Insurance due",
    inspection_due: "Inspection due",
    speed_limit_kmh: "Speed limit (km/h)",
    fuel_card: "Fuel card",
    driver_id: "Driver id",
    name: "Name",
    phone: "Phone",
    licence_no: "Licence number",
    licence_class: "Licence class",
    licence_expiry: "Licence valid until",
  },
};

let merged = false;
export function installRecordMessages(): void {
  if (merged) return;
  merged = true;
  i18n.global.mergeLocaleMessage("zh", zhRecords);
  i18n.global.mergeLocaleMessage("en", enRecords);
}

export const CLASSES = ["机要通信", "应急保障", "执法执勤", "特种专业技术", "一般公务", "其他"];
export const STATUSES = ["在用", "封存", "待处置", "已处置"];
export const ENERGIES = ["燃油", "纯电", "混动"];
export const PLATE = /^[\u4e00-\u9fa5][A-Z][A-Z0-9\u4e00-\u9fa5]{4,6}$/;
export const VIN = /^[A-HJ-NPR-Z0-9]{17}$/;
export const RECORD_ID = /^[A-Za-z0-9._~:-]{1,64}$/;

/** The server's answer to a refused change: its Chinese message when it sent one. */
export async function refusal(r: Response): Promise<string> {
  try {
    const b = (await r.json()) as { message?: string; error?: string };
    return b.message ?? b.error ?? String(r.status);
  } catch {
    return String(r.status);
  }
}
