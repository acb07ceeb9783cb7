//! The message catalog: every string the pages show, in English and in Spanish. An
//! entry without both texts does not compile; a test checks that both use the same
//! `{placeholders}`. To add a string: add a line here and use its key (`M::Key`).

macro_rules! catalog {
    ($($key:ident => $en:literal, $es:literal;)*) => {
        /// A message of the catalog.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum M { $($key,)* }

        impl M {
            /// Every message (for the catalog's tests).
            pub const ALL: &[M] = &[$(M::$key,)*];

            pub fn en(self) -> &'static str {
                match self { $(M::$key => $en,)* }
            }

            pub fn es(self) -> &'static str {
                match self { $(M::$key => $es,)* }
            }
        }
    };
}

catalog! {
    // The frame
    SiteName => "Portico patient portal", "Portal del paciente Portico";
    SkipToContent => "Skip to main content", "Saltar al contenido principal";
    LanguageNav => "Language", "Idioma";
    MainNav => "Main", "Principal";
    SignOut => "Sign out", "Cerrar sesión";
    NavHome => "Home", "Inicio";
    NavRecord => "Health record", "Historia clínica";
    NavAppointments => "Appointments", "Citas";
    NavMedications => "Medications", "Medicamentos";
    NavReferrals => "Referrals", "Derivaciones";
    NavMessages => "Messages", "Mensajes";
    NavBills => "Bills", "Facturas";
    NavDownload => "Download", "Descargar";
    NavProfile => "Profile", "Perfil";
    FooterText => "Your information is shown only to you and the people you allow. Close the browser when you finish on a shared computer.", "Su información solo se muestra a usted y a las personas que usted autorice. Cierre el navegador al terminar si usa un ordenador compartido.";
    SessionEndsAt => "For your security, you will be signed out after {minutes} minutes without activity.", "Por su seguridad, se cerrará su sesión tras {minutes} minutos sin actividad.";
    StaySignedIn => "Stay signed in", "Seguir conectado";
    TimeoutTitle => "You are about to be signed out", "Su sesión está a punto de cerrarse";
    TimeoutText => "For your security, we will sign you out soon because you have not done anything for a while.", "Por su seguridad, cerraremos su sesión pronto porque lleva un tiempo sin actividad.";
    StaleNotice => "We cannot reach the hospital's records system right now. Some of this information may be out of date.", "No podemos conectar con el sistema de historias clínicas del hospital en este momento. Parte de esta información puede no estar actualizada.";
    SectionUnavailable => "This information is not available right now. Try again later.", "Esta información no está disponible ahora. Inténtelo más tarde.";
    ErrorPrefix => "Error", "Error";
    ThereIsAProblem => "There is a problem", "Hay un problema";

    // Months (short)
    Jan => "Jan", "ene"; Feb => "Feb", "feb"; Mar => "Mar", "mar"; Apr => "Apr", "abr";
    May => "May", "may"; Jun => "Jun", "jun"; Jul => "Jul", "jul"; Aug => "Aug", "ago";
    Sep => "Sep", "sept"; Oct => "Oct", "oct"; Nov => "Nov", "nov"; Dec => "Dec", "dic";

    // Signing in and out
    SignInTitle => "Sign in to your patient portal", "Inicie sesión en su portal del paciente";
    SignInLead => "See your health record, manage appointments and prescriptions, message your care team and pay bills.", "Consulte su historia clínica, gestione citas y recetas, escriba a su equipo de atención y pague facturas.";
    SignInWhat1 => "Book, move or cancel appointments", "Pedir, cambiar o cancelar citas";
    SignInWhat2 => "Ask for repeat prescriptions and referrals", "Solicitar renovaciones de recetas y derivaciones";
    SignInWhat3 => "Read test results and download your record", "Ver resultados de pruebas y descargar su historia";
    SignIn => "Sign in", "Iniciar sesión";
    SignInHint => "You sign in with the hospital's account. You will come back here afterwards.", "Iniciará sesión con su cuenta del hospital y después volverá aquí.";
    SignedOutTitle => "You have signed out", "Ha cerrado la sesión";
    SignedOutText => "You have been signed out of the patient portal.", "Ha cerrado la sesión del portal del paciente.";
    SignInAgain => "Sign in again", "Volver a iniciar sesión";
    CsrfTitle => "This form could not be sent", "No se pudo enviar este formulario";
    CsrfBody => "The form has expired or did not come from this portal. Nothing has been changed. Open the page again and try once more.", "El formulario ha caducado o no procede de este portal. No se ha cambiado nada. Abra la página de nuevo y vuelva a intentarlo.";
    TryAgain => "Go to the home page", "Ir a la página de inicio";

    // Error pages
    NotFoundTitle => "Page not found", "Página no encontrada";
    ForbiddenTitle => "You cannot see this page", "No puede ver esta página";
    ServiceProblemTitle => "Sorry, there is a problem with the service", "Lo sentimos, hay un problema con el servicio";
    ProblemTitle => "There is a problem", "Hay un problema";
    BackHome => "Go to the home page", "Ir a la página de inicio";

    // Error sentences
    ErrNotFound => "We could not find this. It may have been removed, or the link may be wrong.", "No hemos encontrado lo que busca. Puede que se haya eliminado o que el enlace no sea correcto.";
    ErrInvalid => "Check what you entered and try again.", "Revise los datos introducidos y vuelva a intentarlo.";
    ErrScopeMissing => "Your account is not allowed to do this.", "Su cuenta no tiene permiso para hacer esto.";
    ErrServiceUnavailable => "The hospital's records system is not available right now. Nothing has been changed. Try again in a few minutes.", "El sistema de historias clínicas del hospital no está disponible ahora. No se ha cambiado nada. Vuelva a intentarlo en unos minutos.";
    ErrTimeout => "The hospital's records system took too long to answer. Try again in a few minutes.", "El sistema de historias clínicas del hospital ha tardado demasiado en responder. Vuelva a intentarlo en unos minutos.";
    ErrOutcomeUnknown => "The hospital's system stopped answering while we were saving this, so we do not know yet whether it was saved. Send the form again: it will not be done twice.", "El sistema del hospital dejó de responder mientras guardábamos esto, así que aún no sabemos si se guardó. Envíe el formulario de nuevo: no se hará dos veces.";
    ErrInProgress => "This is still being saved. Wait a moment, then check before sending it again.", "Todavía se está guardando. Espere un momento y compruébelo antes de volver a enviarlo.";
    ErrKeyReused => "This form was already sent with other details. Open the page again and start over.", "Este formulario ya se envió con otros datos. Abra la página de nuevo y empiece otra vez.";
    ErrNotSupported => "The hospital does not offer this online. Contact your care team.", "El hospital no ofrece esto por internet. Póngase en contacto con su equipo de atención.";
    ErrSlotUnavailable => "Someone else has just booked this time, or it has passed. Choose another time.", "Otra persona acaba de reservar esta hora, o ya ha pasado. Elija otra hora.";
    ErrNotCancelable => "This appointment can no longer be cancelled or moved online. Contact your care team.", "Esta cita ya no se puede cancelar ni cambiar por internet. Póngase en contacto con su equipo de atención.";
    ErrVersionConflict => "This appointment was changed by someone else while you were looking at it. Check it and try again.", "Otra persona ha cambiado esta cita mientras la consultaba. Revísela y vuelva a intentarlo.";
    ErrRescheduleFailed => "We could not move your appointment. Your original appointment has not changed.", "No hemos podido cambiar su cita. Su cita original sigue igual.";
    ErrRescheduleIncomplete => "We booked the new time but could not cancel the old one, so you now have both. Cancel the one you do not want.", "Hemos reservado la nueva hora pero no hemos podido cancelar la anterior, así que ahora tiene las dos. Cancele la que no quiera.";
    ErrChooseTime => "Choose a time", "Elija una hora";
    ErrServiceTypeRequired => "Choose a visit type to search for times.", "Elija un tipo de visita para buscar horas.";
    ErrTextTooLong => "The text is too long. Shorten it and try again.", "El texto es demasiado largo. Acórtelo y vuelva a intentarlo.";
    ErrRecipientNotAllowed => "You can only write to members of your care team. Choose someone from the list.", "Solo puede escribir a miembros de su equipo de atención. Elija a alguien de la lista.";
    ErrNoCareTeam => "You do not have a care team to send this to. Contact the hospital.", "No tiene un equipo de atención al que enviar esto. Póngase en contacto con el hospital.";
    ErrThreadClosed => "This conversation is closed. Start a new message instead.", "Esta conversación está cerrada. Escriba un mensaje nuevo.";
    ErrMessageNotSent => "The conversation was started but your message was not sent. Send the form again.", "La conversación se inició pero su mensaje no se envió. Envíe el formulario de nuevo.";
    ErrChooseRecipient => "Choose who to send your message to", "Elija a quién enviar el mensaje";
    ErrEnterTopic => "Enter a subject", "Escriba un asunto";
    ErrEnterMessage => "Enter your message", "Escriba su mensaje";
    ErrSpecialtyNotAllowed => "Choose a specialty from the list.", "Elija una especialidad de la lista.";
    ErrChooseSpecialty => "Choose a specialty", "Elija una especialidad";
    ErrEnterReason => "Enter why you need the referral", "Escriba por qué necesita la derivación";
    ErrAmountExceedsBalance => "The amount is more than you owe. Enter an amount up to your balance.", "El importe es mayor que lo que debe. Escriba un importe hasta su saldo.";
    ErrInvalidAmount => "Enter an amount, like 25.00", "Escriba un importe, por ejemplo 25,00";
    ErrChoosePaymentMethod => "Choose how to pay", "Elija cómo pagar";
    ErrPaymentDeclined => "Your card was declined. Nothing was charged. Try another card.", "Su tarjeta ha sido rechazada. No se ha cobrado nada. Pruebe con otra tarjeta.";
    ErrPaymentMethodInvalid => "This payment method cannot be used. Choose another one.", "No se puede usar este método de pago. Elija otro.";
    ErrCardNumber => "Do not enter card numbers here. Choose a payment method instead.", "No escriba números de tarjeta aquí. Elija un método de pago.";
    ErrAccountNotPayable => "This bill cannot be paid online right now. Contact the billing office.", "Esta factura no se puede pagar por internet ahora. Póngase en contacto con la oficina de facturación.";
    ErrPaymentUnavailable => "Payments are not available right now. Nothing was charged. Try again later.", "Los pagos no están disponibles ahora. No se ha cobrado nada. Vuelva a intentarlo más tarde.";
    ErrPaymentNotRecorded => "Your card was charged but the hospital has not recorded the payment yet. Send the form again to record it: you will not be charged twice.", "Se ha cobrado su tarjeta pero el hospital aún no ha registrado el pago. Envíe el formulario de nuevo para registrarlo: no se le cobrará dos veces.";
    ErrPaymentRecordUnknown => "Your card was charged, but we do not know yet whether the hospital recorded the payment. Send the form again to find out: you will not be charged twice.", "Se ha cobrado su tarjeta, pero aún no sabemos si el hospital registró el pago. Envíe el formulario de nuevo para saberlo: no se le cobrará dos veces.";
    RefillRefused => "You cannot ask for a refill of this prescription: {reason}", "No puede pedir la renovación de esta receta: {reason}";

    // Refill eligibility reasons
    ReasonNotActive => "it is no longer active. Ask your care team about renewing it.", "ya no está activa. Consulte a su equipo de atención sobre su renovación.";
    ReasonNotAnOrder => "it is not a prescription that can be refilled.", "no es una receta que se pueda renovar.";
    ReasonReported => "it was reported, not prescribed here. Ask your care team for a prescription.", "se registró como informada, no se recetó aquí. Pida una receta a su equipo de atención.";
    ReasonNotYetValid => "it is not valid yet.", "todavía no es válida.";
    ReasonExpired => "it has expired. Ask your care team to renew it.", "ha caducado. Pida a su equipo de atención que la renueve.";
    ReasonAcute => "it was prescribed as a short course and cannot be refilled online. Contact your care team.", "se recetó como un tratamiento corto y no se puede renovar por internet. Póngase en contacto con su equipo de atención.";
    ReasonNoRefillsLeft => "no refills are left. Ask your care team to renew it.", "no quedan renovaciones. Pida a su equipo de atención que la renueve.";
    ReasonAlreadyRequested => "a refill has already been asked for and is waiting for your care team.", "ya se ha pedido una renovación y está pendiente de su equipo de atención.";
    ReasonTooSoon => "it is too soon since the last fill.", "ha pasado muy poco tiempo desde la última dispensación.";
    ReasonHistoryUnavailable => "we cannot check its history right now. Try again later.", "no podemos comprobar su historial ahora. Inténtelo más tarde.";
    ReasonOther => "your care team needs to review it.", "su equipo de atención tiene que revisarla.";
    NextEligible => "You can ask again from {date}.", "Puede volver a pedirla a partir del {date}.";

    // Success banners
    DoneBooked => "Your appointment is booked.", "Su cita está reservada.";
    DoneCancelled => "Your appointment has been cancelled.", "Su cita se ha cancelado.";
    DoneRescheduled => "Your appointment has been moved.", "Su cita se ha cambiado.";
    DoneRefill => "Your refill request has been sent to your care team.", "Su solicitud de renovación se ha enviado a su equipo de atención.";
    DoneReferral => "Your referral request has been sent.", "Su solicitud de derivación se ha enviado.";
    DoneThread => "Your message has been sent.", "Su mensaje se ha enviado.";
    DoneReply => "Your reply has been sent.", "Su respuesta se ha enviado.";
    DonePatient => "You are now acting for the patient you chose.", "Ahora actúa en nombre del paciente elegido.";
    DoneExtended => "You are still signed in.", "Sigue con la sesión iniciada.";

    // Home
    HomeTitle => "Your health at a glance", "Su salud de un vistazo";
    HomeLead => "What needs your attention.", "Lo que requiere su atención.";
    UpcomingVisits => "Upcoming visits", "Próximas visitas";
    NoUpcomingVisits => "You have no upcoming appointments.", "No tiene citas próximas.";
    NoPastVisits => "You have no past appointments.", "No tiene citas pasadas.";
    BookAppointment => "Book an appointment", "Pedir una cita";
    RefillsDue => "Refills you can ask for", "Renovaciones que puede pedir";
    NoRefillsDue => "No prescriptions can be refilled right now.", "Ahora no se puede renovar ninguna receta.";
    UnreadCount => "Unread messages: {count}", "Mensajes sin leer: {count}";
    GoToMessages => "Go to your messages", "Ir a sus mensajes";
    BalanceDue => "Balance due", "Saldo pendiente";
    NoBalance => "You owe nothing.", "No tiene nada pendiente.";
    GoToBills => "See your bills", "Ver sus facturas";
    NewResults => "New results", "Resultados nuevos";
    NoResults => "No results yet.", "Todavía no hay resultados.";
    SeeAllResults => "See all lab results", "Ver todos los resultados de laboratorio";

    // Health record
    RecordTitle => "Your health record", "Su historia clínica";
    RecordLead => "Choose what to look at.", "Elija qué quiere consultar.";
    KindAllergies => "Allergies", "Alergias";
    KindConditions => "Conditions", "Problemas de salud";
    KindMedications => "Prescriptions", "Recetas";
    KindImmunizations => "Immunizations", "Vacunas";
    KindLabResults => "Lab results", "Resultados de laboratorio";
    KindVitalSigns => "Vital signs", "Constantes vitales";
    KindDocuments => "Documents", "Documentos";
    KindEncounters => "Visits", "Visitas";
    KindProcedures => "Procedures", "Procedimientos";
    KindCareTeam => "Care team", "Equipo de atención";
    NoEntries => "Nothing is recorded here.", "No hay nada registrado aquí.";
    RecordPages => "Pages of entries", "Páginas de entradas";
    OlderEntries => "Older entries", "Entradas anteriores";
    NewestEntries => "Newest entries", "Entradas más recientes";
    DownloadLink => "Download your whole record", "Descargar toda su historia";
    ColName => "Name", "Nombre";
    ColDate => "Date", "Fecha";
    ColDetails => "Details", "Detalles";
    ColStatus => "Status", "Estado";
    ColValue => "Value", "Valor";
    ColRange => "Normal range", "Rango normal";
    ColFlag => "Result", "Resultado";
    FlagLow => "Low", "Bajo";
    FlagNormal => "Normal", "Normal";
    FlagHigh => "High", "Alto";
    OtherResults => "Other results", "Otros resultados";
    ChartTableCaption => "{title}: the values in the chart", "{title}: los valores del gráfico";
    ChartDesc => "{count} results from {first} to {last}; the latest is {latest} {unit}.", "{count} resultados del {first} al {last}; el último es {latest} {unit}.";
    ChartRangeBoth => "The normal range is {low} to {high} {unit}.", "El rango normal es de {low} a {high} {unit}.";
    ChartRangeLow => "The normal range is {low} {unit} or more.", "El rango normal es {low} {unit} o más.";
    ChartRangeHigh => "The normal range is up to {high} {unit}.", "El rango normal es hasta {high} {unit}.";
    ChartOutOfRange => "{count} of them outside the normal range.", "{count} de ellos fuera del rango normal.";

    // Appointments
    AppointmentsTitle => "Your appointments", "Sus citas";
    AppointmentsTabs => "Which appointments", "Qué citas";
    Upcoming => "Upcoming", "Próximas";
    Past => "Past", "Pasadas";
    When => "When", "Cuándo";
    Clinician => "Clinician", "Profesional";
    VisitType => "Visit type", "Tipo de visita";
    Place => "Where", "Dónde";
    Reason => "Reason", "Motivo";
    CancelReasonShown => "Why it was cancelled", "Motivo de la cancelación";
    StatusBooked => "Booked", "Reservada";
    StatusCancelled => "Cancelled", "Cancelada";
    StatusRequested => "Requested", "Solicitada";
    StatusFulfilled => "Attended", "Atendida";
    StatusNoShow => "Missed", "No asistió";
    RequestedFor => "Requested for around {date}", "Solicitada para alrededor del {date}";
    TimeToBeArranged => "Time to be arranged", "Hora por determinar";
    Reschedule => "Move", "Cambiar";
    Cancel => "Cancel", "Cancelar";
    FindTitle => "Book an appointment", "Pedir una cita";
    FindLead => "Find a free time, choose it and book it.", "Busque una hora libre, elíjala y resérvela.";
    FindFilters => "Search for free times", "Buscar horas libres";
    From => "From", "Desde";
    To => "To", "Para";
    DateHint => "For example, 2027-03-12", "Por ejemplo, 2027-03-12";
    AnyClinician => "Any clinician", "Cualquier profesional";
    AnyVisitType => "Any visit type", "Cualquier tipo de visita";
    Search => "Search", "Buscar";
    FreeTimes => "Free times", "Horas libres";
    WindowText => "From {start} to {end}.", "Del {start} al {end}.";
    NoFreeTimes => "There are no free times that match. Try other dates or another clinician.", "No hay horas libres que coincidan. Pruebe otras fechas u otro profesional.";
    MoreTimes => "More times may be available: narrow your search to see them.", "Puede haber más horas disponibles: acote la búsqueda para verlas.";
    ChooseTime => "Choose a time", "Elija una hora";
    ReasonOptional => "Reason for the visit (optional)", "Motivo de la visita (opcional)";
    ReasonHint => "This helps your clinician prepare.", "Esto ayuda a que su profesional se prepare.";
    Book => "Book this time", "Reservar esta hora";
    CancelTitle => "Cancel an appointment", "Cancelar una cita";
    CancelReason => "Why are you cancelling? (optional)", "¿Por qué cancela? (opcional)";
    CancelReasonHint => "For example, I feel better, or I cannot come that day.", "Por ejemplo, me encuentro mejor o no puedo ir ese día.";
    ConfirmCancel => "Cancel this appointment", "Cancelar esta cita";
    KeepAppointment => "Keep it", "Mantenerla";
    BackToAppointments => "Back to your appointments", "Volver a sus citas";
    RescheduleTitle => "Move an appointment", "Cambiar una cita";
    CurrentAppointment => "Your appointment now", "Su cita actual";
    ChooseNewTime => "Choose a new time", "Elija una nueva hora";
    ConfirmReschedule => "Move to this time", "Cambiar a esta hora";

    // Medications
    MedicationsTitle => "Your medications", "Sus medicamentos";
    YourMedications => "Prescriptions", "Recetas";
    NoMedications => "You have no prescriptions.", "No tiene recetas.";
    UnnamedMedication => "Medication", "Medicamento";
    Medication => "Medication", "Medicamento";
    Dosage => "How to take it", "Cómo tomarlo";
    Prescriber => "Prescribed by", "Recetado por";
    RefillsLeft => "Refills left", "Renovaciones restantes";
    LastFilled => "Last filled", "Última dispensación";
    RequestRefill => "Ask for a refill", "Pedir renovación";
    RefillNotNow => "You cannot ask for a refill now:", "Ahora no puede pedir una renovación:";
    RefillRequests => "Your refill requests", "Sus solicitudes de renovación";
    NoRefillRequests => "You have not asked for any refills.", "No ha pedido ninguna renovación.";
    RefillStatusRequested => "Sent", "Enviada";
    RefillStatusAccepted => "Accepted", "Aceptada";
    RefillStatusInProgress => "Being worked on", "En curso";
    RefillStatusCompleted => "Done", "Completada";
    RefillStatusRejected => "Refused", "Rechazada";
    RefillStatusCancelled => "Withdrawn", "Retirada";
    RefillStatusUnknown => "Unknown", "Desconocido";
    RefillTitle => "Ask for a refill", "Pedir una renovación";
    PharmacyOptional => "Pharmacy (optional)", "Farmacia (opcional)";
    PharmacyHint => "Where you want to collect it.", "Dónde quiere recogerla.";
    NoteOptional => "Note for your care team (optional)", "Nota para su equipo de atención (opcional)";
    SendRefillRequest => "Send refill request", "Enviar solicitud de renovación";
    BackToMedications => "Back to your medications", "Volver a sus medicamentos";

    // Referrals
    ReferralsTitle => "Referrals", "Derivaciones";
    YourReferrals => "Your referral requests", "Sus solicitudes de derivación";
    NoReferrals => "You have not asked for any referrals.", "No ha pedido ninguna derivación.";
    RequestReferral => "Ask for a referral", "Pedir una derivación";
    Specialty => "Specialty", "Especialidad";
    ChooseSpecialty => "Choose a specialty", "Elija una especialidad";
    ReferralReason => "Why do you need this referral?", "¿Por qué necesita esta derivación?";
    ReferralReasonHint => "Describe your symptoms or what you would like help with.", "Describa sus síntomas o en qué necesita ayuda.";
    NotesOptional => "Anything else (optional)", "Algo más (opcional)";
    SendReferral => "Send referral request", "Enviar solicitud de derivación";
    BackToReferrals => "Back to your referrals", "Volver a sus derivaciones";
    ReferralDraft => "Draft", "Borrador";
    ReferralActive => "Being reviewed", "En revisión";
    ReferralOnHold => "On hold", "En espera";
    ReferralCompleted => "Done", "Completada";
    ReferralRevoked => "Withdrawn", "Retirada";

    // Messages
    MessagesTitle => "Messages", "Mensajes";
    NewMessage => "Write a new message", "Escribir un mensaje nuevo";
    NoThreads => "You have no messages.", "No tiene mensajes.";
    NoTopic => "(no subject)", "(sin asunto)";
    UnreadTag => "{count} unread", "{count} sin leer";
    Closed => "Closed", "Cerrada";
    ChooseRecipient => "Choose someone", "Elija a alguien";
    Topic => "Subject", "Asunto";
    Message => "Message", "Mensaje";
    MessageHint => "Do not use messages for emergencies. Call 911 or go to the emergency room.", "No use los mensajes para urgencias. Llame al 911 o acuda a urgencias.";
    Send => "Send message", "Enviar mensaje";
    BackToMessages => "Back to your messages", "Volver a sus mensajes";
    Participants => "In this conversation", "En esta conversación";
    You => "You", "Usted";
    New => "New", "Nuevo";
    Reply => "Reply", "Responder";
    YourReply => "Your reply", "Su respuesta";
    SendReply => "Send reply", "Enviar respuesta";

    // Bills
    BillsTitle => "Your bills", "Sus facturas";
    NoBills => "You have no bills.", "No tiene facturas.";
    Account => "Account", "Cuenta";
    Balance => "Balance", "Saldo";
    Statement => "Statement", "Extracto";
    Amount => "Amount", "Importe";
    Total => "Total", "Total";
    OtherStatements => "Other statements", "Otros extractos";
    PayThisBill => "Pay this bill", "Pagar esta factura";
    PayTitle => "Pay a bill", "Pagar una factura";
    AmountIn => "Amount to pay ({currency})", "Importe a pagar ({currency})";
    AmountHint => "You can pay all or part of the balance.", "Puede pagar todo el saldo o una parte.";
    PaymentMethod => "How do you want to pay?", "¿Cómo quiere pagar?";
    TestCardOk => "Test card (payment succeeds)", "Tarjeta de prueba (el pago se acepta)";
    TestCardDeclined => "Test card (payment is declined)", "Tarjeta de prueba (el pago se rechaza)";
    TestCardHint => "This demo uses a test payment processor: no real money moves.", "Esta demostración usa un procesador de pagos de prueba: no se mueve dinero real.";
    PayNow => "Pay now", "Pagar ahora";
    BackToBills => "Back to your bills", "Volver a sus facturas";
    ReceiptTitle => "Payment receipt", "Justificante de pago";
    PaymentDone => "Thank you. Your payment has been received.", "Gracias. Hemos recibido su pago.";
    PaymentReference => "Payment reference", "Referencia del pago";
    ReceiptNumber => "Receipt number", "Número de justificante";

    // Download
    DownloadTitle => "Download your record", "Descargar su historia clínica";
    DownloadLead => "Keep a copy of your health record, or share it with another doctor.", "Guarde una copia de su historia clínica o compártala con otro médico.";
    DownloadFhirTitle => "The whole record, for apps and other doctors", "La historia completa, para aplicaciones y otros médicos";
    DownloadFhirText => "A file in the FHIR standard that other health systems and apps can read.", "Un archivo en el estándar FHIR que otros sistemas sanitarios y aplicaciones pueden leer.";
    DownloadFhir => "Download the whole record (FHIR JSON)", "Descargar la historia completa (FHIR JSON)";
    SummaryTitle => "Summary of your health record", "Resumen de su historia clínica";
    SummaryText => "A summary you can read and print.", "Un resumen que puede leer e imprimir.";
    OpenSummary => "Open the printable summary", "Abrir el resumen para imprimir";
    Print => "Print this page", "Imprimir esta página";
    PrintHint => "Or use your browser's print command.", "O use la opción de imprimir de su navegador.";
    PrintedOn => "Summary made on {date}.", "Resumen generado el {date}.";

    // Profile and session
    ProfileTitle => "Your profile", "Su perfil";
    AboutYou => "About you", "Sus datos";
    AboutThePatient => "About the patient you act for", "Datos del paciente en cuyo nombre actúa";
    Name => "Name", "Nombre";
    BirthDate => "Date of birth", "Fecha de nacimiento";
    Gender => "Gender", "Sexo";
    Contact => "Contact", "Contacto";
    ActingFor => "Whose information you see", "De quién ve la información";
    ChoosePatient => "Choose the patient to act for", "Elija el paciente en cuyo nombre actúa";
    SwitchPatient => "Switch", "Cambiar";
    OnlyYourself => "You can see only your own information.", "Solo puede ver su propia información.";
    ActingForBanner => "You are seeing the information of {name}.", "Está viendo la información de {name}.";
    SwitchPatientLink => "Change whose information you see", "Cambiar de quién ve la información";
    AccessLevelFull => "full access", "acceso completo";
    AccessLevelReadOnly => "can view only", "solo puede ver";
    AccessLevelBillingOnly => "bills and payments only", "solo facturas y pagos";
    YourOwnRecord => "your own record", "su propio expediente";
    SessionTitle => "Your session", "Su sesión";
    SessionManage => "See how long you stay signed in", "Ver cuánto tiempo sigue conectado";
    SessionExplain => "Using any page keeps you signed in. You can also stay signed in without leaving this page.", "Usar cualquier página mantiene la sesión iniciada. También puede seguir conectado sin salir de esta página.";
}
